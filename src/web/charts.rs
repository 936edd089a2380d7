//! Time-series charts as plain SVG geometry, rendered server-side by a template: no
//! chart library, no script, works offline and under a strict CSP. Pure: data in,
//! coordinates and labels out.

use serde::Serialize;

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 240.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;

/// How values on the y axis are printed.
#[derive(Debug, Clone, Copy)]
pub enum Unit {
    /// A fraction shown as a percentage (0.31 -> 31%).
    Fraction,
    /// A fraction difference shown in percentage points (0.012 -> +1.2 pp).
    Points,
    /// A percentage already (25 -> 25%).
    Percent,
    /// A count (1234 -> 1234).
    Count,
}

impl Unit {
    pub fn format(self, v: f64) -> String {
        match self {
            Unit::Fraction => format!("{:.1}%", v * 100.0),
            Unit::Points => format!("{:+.1} pp", v * 100.0),
            Unit::Percent => format!("{v:.0}%"),
            Unit::Count => format!("{v:.0}"),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Tick {
    pub pos: f64,
    pub label: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Path {
    /// CSS class (colour) of the series.
    pub class: String,
    pub label: String,
    /// SVG `points` attribute.
    pub points: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Rule {
    pub class: String,
    pub label: String,
    pub y: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Marker {
    pub class: String,
    pub label: String,
    pub x: f64,
    pub y: f64,
}

/// A finished chart: everything the template needs, in SVG user units.
#[derive(Debug, Clone, Serialize)]
pub struct Chart {
    pub title: String,
    /// A sentence describing the chart for screen readers.
    pub summary: String,
    pub width: f64,
    pub height: f64,
    pub left: f64,
    pub right: f64,
    pub top: f64,
    pub bottom: f64,
    pub x_ticks: Vec<Tick>,
    pub y_ticks: Vec<Tick>,
    pub bands: Vec<Path>,
    pub lines: Vec<Path>,
    pub rules: Vec<Rule>,
    pub markers: Vec<Marker>,
    pub empty: bool,
}

struct Series {
    class: String,
    label: String,
    points: Vec<(f64, f64)>,
    step: bool,
}

struct BandData {
    class: String,
    label: String,
    lower: Vec<(f64, f64)>,
    upper: Vec<(f64, f64)>,
}

/// Collects series, then scales them all to one frame.
pub struct ChartBuilder {
    title: String,
    unit: Unit,
    lines: Vec<Series>,
    bands: Vec<BandData>,
    rules: Vec<(f64, String, String)>,
    markers: Vec<(f64, f64, String, String)>,
    y_floor: Option<(f64, f64)>,
}

impl ChartBuilder {
    pub fn new(title: impl Into<String>, unit: Unit) -> ChartBuilder {
        ChartBuilder {
            title: title.into(),
            unit,
            lines: Vec::new(),
            bands: Vec::new(),
            rules: Vec::new(),
            markers: Vec::new(),
            y_floor: None,
        }
    }

    /// Always show at least this y range (e.g. 0-100 for exposure).
    pub fn y_range(mut self, lo: f64, hi: f64) -> Self {
        self.y_floor = Some((lo, hi));
        self
    }

    /// A line through `(time_ms, value)` points.
    pub fn line(&mut self, class: &str, label: &str, points: Vec<(f64, f64)>) {
        self.lines.push(Series {
            class: class.into(),
            label: label.into(),
            points,
            step: false,
        });
    }

    /// A step line: each value holds until the next point (exposure over time).
    pub fn steps(&mut self, class: &str, label: &str, points: Vec<(f64, f64)>) {
        self.lines.push(Series {
            class: class.into(),
            label: label.into(),
            points,
            step: true,
        });
    }

    /// A shaded band between `lower` and `upper` (same x values).
    pub fn band(
        &mut self,
        class: &str,
        label: &str,
        lower: Vec<(f64, f64)>,
        upper: Vec<(f64, f64)>,
    ) {
        self.bands.push(BandData {
            class: class.into(),
            label: label.into(),
            lower,
            upper,
        });
    }

    /// A horizontal line across the chart (a threshold).
    pub fn rule(&mut self, y: f64, class: &str, label: &str) {
        self.rules.push((y, class.into(), label.into()));
    }

    pub fn marker(&mut self, x: f64, y: f64, class: &str, label: &str) {
        self.markers.push((x, y, class.into(), label.into()));
    }

    pub fn build(self) -> Chart {
        let mut all: Vec<(f64, f64)> = self
            .lines
            .iter()
            .flat_map(|s| s.points.iter())
            .chain(
                self.bands
                    .iter()
                    .flat_map(|b| b.lower.iter().chain(b.upper.iter())),
            )
            .copied()
            .collect();
        all.extend(self.markers.iter().map(|m| (m.0, m.1)));
        all.retain(|p| p.0.is_finite() && p.1.is_finite());
        let empty = all.is_empty();
        let (mut x0, mut x1) = all.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| {
            (lo.min(p.0), hi.max(p.0))
        });
        let (mut y0, mut y1) = all.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| {
            (lo.min(p.1), hi.max(p.1))
        });
        for (y, _, _) in &self.rules {
            if y.is_finite() {
                y0 = y0.min(*y);
                y1 = y1.max(*y);
            }
        }
        if let Some((lo, hi)) = self.y_floor {
            y0 = y0.min(lo);
            y1 = y1.max(hi);
        }
        if empty {
            x0 = 0.0;
            x1 = 1.0;
        }
        if !(y0.is_finite() && y1.is_finite()) || y0 > y1 {
            y0 = 0.0;
            y1 = 1.0;
        }
        if (x1 - x0).abs() < 1.0 {
            x0 -= 1_800_000.0;
            x1 += 1_800_000.0;
        }
        if (y1 - y0).abs() < 1e-9 {
            let pad = y0.abs().max(0.01) * 0.1;
            y0 -= pad;
            y1 += pad;
        } else {
            let pad = (y1 - y0) * 0.06;
            y0 -= if self.y_floor.is_some_and(|(lo, _)| lo == y0) {
                0.0
            } else {
                pad
            };
            y1 += if self.y_floor.is_some_and(|(_, hi)| hi == y1) {
                0.0
            } else {
                pad
            };
        }
        let plot_w = WIDTH - LEFT - RIGHT;
        let plot_h = HEIGHT - TOP - BOTTOM;
        let sx = |x: f64| LEFT + (x - x0) / (x1 - x0) * plot_w;
        let sy = |y: f64| TOP + (1.0 - (y - y0) / (y1 - y0)) * plot_h;
        let fmt_points = |pts: &[(f64, f64)]| {
            pts.iter()
                .filter(|p| p.0.is_finite() && p.1.is_finite())
                .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let lines = self
            .lines
            .iter()
            .map(|s| {
                let mut pts = s.points.clone();
                pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                if s.step {
                    let mut stepped = Vec::with_capacity(pts.len() * 2);
                    for (i, p) in pts.iter().enumerate() {
                        if i > 0 {
                            stepped.push((p.0, pts[i - 1].1));
                        }
                        stepped.push(*p);
                    }
                    if let Some(last) = pts.last() {
                        stepped.push((x1, last.1));
                    }
                    pts = stepped;
                }
                Path {
                    class: s.class.clone(),
                    label: s.label.clone(),
                    points: fmt_points(&pts),
                }
            })
            .collect();
        let bands = self
            .bands
            .iter()
            .map(|b| {
                let mut outline = b.upper.clone();
                outline.extend(b.lower.iter().rev());
                Path {
                    class: b.class.clone(),
                    label: b.label.clone(),
                    points: fmt_points(&outline),
                }
            })
            .collect();
        let rules = self
            .rules
            .iter()
            .filter(|r| r.0.is_finite())
            .map(|(y, class, label)| Rule {
                class: class.clone(),
                label: label.clone(),
                y: sy(*y),
            })
            .collect();
        let markers = self
            .markers
            .iter()
            .filter(|m| m.0.is_finite() && m.1.is_finite())
            .map(|(x, y, class, label)| Marker {
                class: class.clone(),
                label: label.clone(),
                x: sx(*x),
                y: sy(*y),
            })
            .collect();
        let x_ticks = (0..=4)
            .map(|i| {
                let x = x0 + (x1 - x0) * f64::from(i) / 4.0;
                Tick {
                    pos: sx(x),
                    label: time_label(x as i64, x1 - x0),
                }
            })
            .collect();
        let y_ticks = (0..=4)
            .map(|i| {
                let y = y0 + (y1 - y0) * f64::from(i) / 4.0;
                Tick {
                    pos: sy(y),
                    label: self.unit.format(y),
                }
            })
            .collect();
        let names: Vec<&str> = self.lines.iter().map(|s| s.label.as_str()).collect();
        let summary = if empty {
            format!("{}: no data yet", self.title)
        } else {
            format!(
                "{}: {} from {} to {}, values between {} and {}",
                self.title,
                names.join(", "),
                time_label(x0 as i64, f64::MAX),
                time_label(x1 as i64, f64::MAX),
                self.unit.format(y0),
                self.unit.format(y1)
            )
        };
        Chart {
            title: self.title,
            summary,
            width: WIDTH,
            height: HEIGHT,
            left: LEFT,
            right: WIDTH - RIGHT,
            top: TOP,
            bottom: HEIGHT - BOTTOM,
            x_ticks,
            y_ticks,
            bands,
            lines,
            rules,
            markers,
            empty,
        }
    }
}

/// A UTC time label whose precision suits the span shown.
fn time_label(ms: i64, span_ms: f64) -> String {
    let Some(t) = chrono::DateTime::from_timestamp_millis(ms) else {
        return String::new();
    };
    if span_ms < 2.0 * 86_400_000.0 {
        t.format("%d %b %H:%M").to_string()
    } else {
        t.format("%d %b").to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_are_scaled_into_the_plot_area() {
        let mut b = ChartBuilder::new("t", Unit::Fraction);
        b.line("a", "A", vec![(0.0, 0.2), (3_600_000.0, 0.4)]);
        b.rule(0.1, "tol", "tolerance");
        let c = b.build();
        assert!(!c.empty);
        let pts: Vec<(f64, f64)> = c.lines[0]
            .points
            .split(' ')
            .map(|p| {
                let (x, y) = p.split_once(',').unwrap();
                (x.parse().unwrap(), y.parse().unwrap())
            })
            .collect();
        assert_eq!(pts.len(), 2);
        for (x, y) in &pts {
            assert!(*x >= c.left && *x <= c.right, "{x}");
            assert!(*y >= c.top && *y <= c.bottom, "{y}");
        }
        // Higher values are drawn higher (smaller y).
        assert!(pts[1].1 < pts[0].1);
        // The rule is below both points.
        assert!(c.rules[0].y > pts[0].1);
    }

    #[test]
    fn steps_hold_each_value_until_the_next_point() {
        let mut b = ChartBuilder::new("exposure", Unit::Percent).y_range(0.0, 100.0);
        b.steps("e", "exposure", vec![(0.0, 5.0), (10.0, 10.0)]);
        let c = b.build();
        // 2 points -> 2 + 1 corner + 1 extension to the right edge.
        assert_eq!(c.lines[0].points.split(' ').count(), 4);
        assert_eq!(c.y_ticks.last().unwrap().label, "100%");
        assert_eq!(c.y_ticks[0].label, "0%");
    }

    #[test]
    fn an_empty_chart_says_so() {
        let c = ChartBuilder::new("nothing", Unit::Points).build();
        assert!(c.empty);
        assert!(c.summary.contains("no data"));
        assert!(c.lines.is_empty());
    }

    #[test]
    fn units_format() {
        assert_eq!(Unit::Fraction.format(0.314), "31.4%");
        assert_eq!(Unit::Points.format(-0.012), "-1.2 pp");
        assert_eq!(Unit::Percent.format(25.0), "25%");
        assert_eq!(Unit::Count.format(1234.4), "1234");
    }
}
