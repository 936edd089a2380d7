//! `fusebox simulate`: a Monte-Carlo check of the fuses on synthetic rollouts (METHODS.md §4).
//!
//! Why it exists: the false-alarm and detection figures in METHODS.md §4 came from a script that
//! is not shipped. This command runs the server's own code path instead: the records go through
//! [`build_tick_input`], then the real [`evaluate`], then [`RolloutState::apply`]. So the
//! figures describe the fuses as built, including the ramp plan, the Bonferroni split over the
//! guardrails, the sample and maturity gates and the throttle budget. An idealised 50/50 test
//! on one metric would describe something else.
//!
//! The protocol of one run:
//! - Users arrive evenly spaced in time at `users_per_day`. Each is bucketed into treatment
//!   with the exposure % in force (the fuse's [`RolloutState`], starting at the first ramp step),
//!   and into the control holdout otherwise. Every user arrives once, so nobody crosses over.
//! - Outcomes, drawn at arrival: active on day 0 with probability 80%. D1 retention is
//!   Bernoulli(`baseline`), or Bernoulli(`harm`) for treatment users of the harmful feature.
//!   D7 retention is 15% and an error within 24 h 1%, the same in both arms. 60% of treatment
//!   users adopt the feature. Nobody gives feedback. The eligibility rules hide each outcome
//!   until its window plus the ingestion lag has closed.
//! - Every simulated hour, for `days` days: build the tick input from all users so far, evaluate
//!   and apply the decision. A rollback is terminal.
//! - For contrast, a naive monitor watches the same stream. It runs the fixed-horizon pooled
//!   z-test on D1 retention every hour, under the same sample gates, and records the first
//!   look with p < 0.05. It acts on nothing, so the fuse's data stream is the same with or
//!   without it.
//!
//! Runs use a small deterministic PRNG ([`SplitMix64`]) seeded from `--seed`, the traffic level,
//! the scenario and the run number. Output is therefore reproducible and independent of thread
//! scheduling.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{anyhow, bail, Context};

use crate::domain::fuse::{build_tick_input, Arm, CohortUser, CohortWindows, Epoch};
use crate::domain::stats::{
    analyze_two_proportions, evaluate, DecisionKind, DecisionRule, FuseConfig, MetricKind,
    RolloutState,
};

const MS_PER_HOUR: i64 = 3_600_000;
const MS_PER_DAY: i64 = 24 * MS_PER_HOUR;
/// Share of users active on their exposure day (day 0; never a retention success).
const DAY0_ACTIVE: f64 = 0.8;
/// D7 retention in both arms.
const D7_RETENTION: f64 = 0.15;
/// Probability of at least one error within 24 h of exposure, both arms. It is half the
/// default 2% ceiling, so that only a real increase can trip the error guardrail.
const ERROR_RATE: f64 = 0.01;
/// Share of treatment users who use the feature; well above the default `min_adoption` 15%.
const ADOPTION: f64 = 0.6;
/// Level of the naive fixed-horizon test.
const NAIVE_ALPHA: f64 = 0.05;
/// `z_{0.95}`: the naive one-sided (harm) test fires when the pooled z is below its negative.
const Z_ONE_SIDED_95: f64 = 1.644_853_626_951_472_2;
/// `z_{0.975}` for the Wilson intervals of the reported rates.
const Z_975: f64 = 1.959_963_984_540_054;
/// Runs per cell under `--quick`.
const QUICK_RUNS: u32 = 20;

/// Options of `fusebox simulate`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// Days each simulated rollout is watched; the fuse looks every hour.
    #[arg(long, default_value_t = 14)]
    pub days: u32,
    /// Monte-Carlo runs per traffic level and scenario (A/A and harmful). The default, 500,
    /// takes about two minutes on 2 cores at the default traffic levels and pins an A/A
    /// false-rollback rate near 2.5% to about ±1.5 points (95% Wilson interval, 1.4–4.3%).
    /// METHODS.md §4 used 20 000 A/A runs per row; pass `--runs` for that precision.
    #[arg(long, default_value_t = 500)]
    pub runs: u32,
    /// Seed of the deterministic PRNG.
    #[arg(long, default_value_t = 20_240_601)]
    pub seed: u64,
    /// Traffic levels to simulate, in new users per day (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = vec![1000, 5000, 20000])]
    pub users_per_day: Vec<u32>,
    /// D1 retention of control users, and of treatment users in the A/A scenario.
    #[arg(long, default_value_t = 0.30)]
    pub baseline: f64,
    /// D1 retention of treatment users of the harmful feature.
    #[arg(long, default_value_t = 0.27)]
    pub harm: f64,
    /// Smoke run: at most 20 runs per cell (a few seconds).
    #[arg(long)]
    pub quick: bool,
    /// Fuse tolerance `min_retention_delta` (≤ 0). The default 0 is the harm threshold of
    /// METHODS.md §4 ("harm" = any drop), so the figures compare with that table; the
    /// product default is −0.02.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub min_retention_delta: f64,
    /// Fixed tuning `S`; without it `S` is resolved from the baseline as at rollout start
    /// (5000 when `min_retention_delta` is 0).
    #[arg(long)]
    pub tuning_s: Option<f64>,
    /// Worker threads (the development machines have 2 cores).
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
}

/// Runs the simulation and returns the Markdown report, ending with the wall time it took.
pub fn run(args: &SimulateArgs) -> anyhow::Result<String> {
    let started = Instant::now();
    let settings = Settings::from_args(args)?;
    let mut report = report(&settings)?;
    let runs = settings.runs as usize * 2 * settings.users_per_day.len();
    writeln!(
        report,
        "\n_Wall time: {:.1} s for {runs} simulated rollouts on {} threads._",
        started.elapsed().as_secs_f64(),
        settings.threads
    )?;
    Ok(report)
}

/// Validated simulation settings.
#[derive(Debug, Clone)]
struct Settings {
    cfg: FuseConfig,
    windows: CohortWindows,
    days: u32,
    runs: u32,
    seed: u64,
    users_per_day: Vec<u32>,
    baseline: f64,
    harm: f64,
    threads: usize,
}

impl Settings {
    fn from_args(a: &SimulateArgs) -> anyhow::Result<Self> {
        if a.days == 0 || a.days > 365 {
            bail!("--days must be in 1..=365, got {}", a.days);
        }
        if a.runs == 0 {
            bail!("--runs must be at least 1");
        }
        if a.users_per_day.is_empty() || a.users_per_day.contains(&0) {
            bail!("--users-per-day must list positive numbers");
        }
        for (name, p) in [("--baseline", a.baseline), ("--harm", a.harm)] {
            if !(p > 0.0 && p < 1.0) {
                bail!("{name} must be in (0, 1), got {p}");
            }
        }
        if a.threads == 0 {
            bail!("--threads must be at least 1");
        }
        let cfg = FuseConfig {
            min_retention_delta: a.min_retention_delta,
            tuning_s: a.tuning_s,
            ..FuseConfig::default()
        };
        cfg.validate().map_err(|errors| {
            let list: Vec<_> = errors.iter().map(ToString::to_string).collect();
            anyhow!("invalid fuse settings: {}", list.join("; "))
        })?;
        // Keep the given order for the table, without repeats (a repeated level would pool
        // two identical sets of seeded runs into one cell).
        let mut users_per_day = Vec::new();
        for &level in &a.users_per_day {
            if !users_per_day.contains(&level) {
                users_per_day.push(level);
            }
        }
        Ok(Self {
            cfg,
            windows: CohortWindows::default(),
            days: a.days,
            runs: if a.quick {
                a.runs.min(QUICK_RUNS)
            } else {
                a.runs
            },
            seed: a.seed,
            users_per_day,
            baseline: a.baseline,
            harm: a.harm,
            threads: a.threads,
        })
    }
}

/// SplitMix64 (Steele, Lea & Flood 2014): tiny, fast, and statistically sound enough for
/// Bernoulli draws. It is written here so that the output never changes with a dependency.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator with the given seed.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.state)
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// `true` with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.next_f64() < p
    }
}

/// SplitMix64's output function, also used to derive independent per-run seeds.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    /// Treatment identical to control: every rollback is a false one.
    AaTest,
    /// Treatment D1 retention drops from `baseline` to `harm`.
    Harmful,
}

#[derive(Debug, Clone, Copy)]
struct Job {
    users_per_day: u32,
    scenario: Scenario,
    run: u32,
}

impl Job {
    /// Seed from what the run *is*, not from its position in the job list, so a cell's figures
    /// do not change when other traffic levels are added or removed.
    fn seed(&self, base: u64) -> u64 {
        let scenario = match self.scenario {
            Scenario::AaTest => 1,
            Scenario::Harmful => 2,
        };
        let a = mix64(base ^ mix64(u64::from(self.users_per_day)));
        mix64(a ^ mix64(scenario) ^ mix64(u64::from(self.run) << 8))
    }
}

/// What happened in one run; times are looks = hours since the rollout started.
#[derive(Debug, Clone, Default, PartialEq)]
struct RunOutcome {
    first_throttle_h: Option<u32>,
    rollback_h: Option<u32>,
    rollback_rule: Option<DecisionRule>,
    srm_hold: bool,
    reached_full: bool,
    naive_two_sided_h: Option<u32>,
    naive_one_sided_h: Option<u32>,
}

/// Arrival time of the i-th user: evenly spaced at `users_per_day`.
fn arrival_ms(i: u64, users_per_day: u32) -> i64 {
    let t = i128::from(i) * i128::from(MS_PER_DAY) / i128::from(users_per_day);
    i64::try_from(t).unwrap_or(i64::MAX)
}

fn new_user(
    rng: &mut SplitMix64,
    t0_ms: i64,
    exposure_pct: f64,
    treatment_d1: f64,
    baseline: f64,
) -> CohortUser {
    // A uniform bucket in [0, 100) stands in for the murmur3 hash of the user id.
    let treated = rng.next_f64() * 100.0 < exposure_pct;
    let mut active_days = 0u64;
    if rng.chance(DAY0_ACTIVE) {
        active_days |= 1;
    }
    if rng.chance(if treated { treatment_d1 } else { baseline }) {
        active_days |= 1 << 1;
    }
    if rng.chance(D7_RETENTION) {
        active_days |= 1 << 7;
    }
    let first_error_ms = if rng.chance(ERROR_RATE) {
        Some(t0_ms + (rng.next_f64() * MS_PER_DAY as f64) as i64)
    } else {
        None
    };
    CohortUser {
        arm: if treated {
            Arm::Treatment
        } else {
            Arm::Control
        },
        t0_ms,
        active_days,
        first_activation_ms: None,
        first_error_ms,
        adopted: treated && rng.chance(ADOPTION),
        feedback: None,
        crossed_over: false,
    }
}

/// One simulated rollout, watched every hour for `days` days.
fn simulate_run(s: &Settings, job: &Job) -> anyhow::Result<RunOutcome> {
    let mut rng = SplitMix64::new(job.seed(s.seed));
    let mut state = RolloutState::start(&s.cfg, 0, Some(s.baseline))?;
    let treatment_d1 = match job.scenario {
        Scenario::AaTest => s.baseline,
        Scenario::Harmful => s.harm,
    };
    let looks = s.days * 24;
    let capacity = u64::from(job.users_per_day) * u64::from(s.days) + 1;
    let mut users = Vec::with_capacity(usize::try_from(capacity).unwrap_or(0));
    let mut arrived = 0u64;
    let mut previous_min_p: HashMap<String, f64> = HashMap::new();
    let mut out = RunOutcome::default();

    for look in 1..=looks {
        let now = i64::from(look) * MS_PER_HOUR;
        // Arrivals of the past hour, bucketed with the exposure decided at the previous look.
        loop {
            let t0 = arrival_ms(arrived, job.users_per_day);
            if t0 >= now {
                break;
            }
            users.push(new_user(
                &mut rng,
                t0,
                state.exposure_pct,
                treatment_d1,
                s.baseline,
            ));
            arrived += 1;
        }
        let epoch = Epoch {
            started_at_ms: state.step_started_at_ms,
            treatment_pct: state.exposure_pct,
        };
        let analysis = build_tick_input(
            &users,
            &s.cfg,
            &s.windows,
            false,
            &epoch,
            now,
            now,
            &previous_min_p,
        );
        watch_naively(&s.cfg, &analysis.tick.guardrails, look, &mut out)?;

        if state.exposure_pct > 0.0 {
            let d = evaluate(&s.cfg, &state, &analysis.tick)?;
            for g in &d.guardrails {
                if let Some(p) = g.p_value_sticky {
                    match previous_min_p.get_mut(&g.name) {
                        Some(slot) => *slot = p,
                        None => {
                            previous_min_p.insert(g.name.clone(), p);
                        }
                    }
                }
            }
            match d.kind {
                DecisionKind::Throttle => {
                    out.first_throttle_h.get_or_insert(look);
                }
                DecisionKind::Rollback => {
                    out.rollback_h = Some(look);
                    out.rollback_rule = Some(d.rule);
                }
                DecisionKind::Hold if d.rule == DecisionRule::SrmDetected => out.srm_hold = true,
                _ => {}
            }
            state = state.apply(&d, now);
            out.reached_full |= state.exposure_pct >= 100.0;
        }
        let all_decided = out.rollback_h.is_some()
            && out.naive_two_sided_h.is_some()
            && out.naive_one_sided_h.is_some();
        if all_decided {
            break;
        }
    }
    Ok(out)
}

/// The naive monitor: a fixed-horizon pooled z-test on D1 at every look, with the same sample
/// gates as the fuse (`min_users_per_arm` eligible per arm, enough successes and failures).
fn watch_naively(
    cfg: &FuseConfig,
    guardrails: &[crate::domain::stats::GuardrailInput],
    look: u32,
    out: &mut RunOutcome,
) -> anyhow::Result<()> {
    let Some(d1) = guardrails
        .iter()
        .find(|g| g.kind == MetricKind::Retention { day: 1 })
    else {
        return Ok(());
    };
    let c = &d1.counts;
    let gated = c.control_users < cfg.min_users_per_arm
        || c.treatment_users < cfg.min_users_per_arm
        || c.total_successes() < cfg.min_successes_and_failures
        || c.total_failures() < cfg.min_successes_and_failures;
    if gated {
        return Ok(());
    }
    let a = analyze_two_proportions(c, NAIVE_ALPHA)?;
    if a.p_value.is_some_and(|p| p < NAIVE_ALPHA) {
        out.naive_two_sided_h.get_or_insert(look);
    }
    if a.pooled_z.is_some_and(|z| z < -Z_ONE_SIDED_95) {
        out.naive_one_sided_h.get_or_insert(look);
    }
    Ok(())
}

/// Runs every job on `threads` workers. The outcomes come back in job order, so the result
/// does not depend on scheduling.
fn run_jobs(s: &Settings, jobs: &[Job]) -> anyhow::Result<Vec<RunOutcome>> {
    let next = AtomicUsize::new(0);
    let per_thread: Vec<anyhow::Result<Vec<(usize, RunOutcome)>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..s.threads.min(jobs.len().max(1)))
            .map(|_| {
                scope.spawn(|| -> anyhow::Result<Vec<(usize, RunOutcome)>> {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(job) = jobs.get(i) else {
                            return Ok(done);
                        };
                        done.push((i, simulate_run(s, job)?));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("a simulation thread panicked")))
            })
            .collect()
    });
    let mut outcomes: Vec<Option<RunOutcome>> = vec![None; jobs.len()];
    for batch in per_thread {
        for (i, o) in batch? {
            if let Some(slot) = outcomes.get_mut(i) {
                *slot = Some(o);
            }
        }
    }
    outcomes
        .into_iter()
        .map(|o| o.context("a simulation job produced no outcome"))
        .collect()
}

/// Runs all cells and renders the Markdown report (without the wall time, so it is
/// deterministic for a seed).
fn report(s: &Settings) -> anyhow::Result<String> {
    // Heaviest traffic first, so the two workers finish together.
    let mut heaviest_first = s.users_per_day.clone();
    heaviest_first.sort_unstable_by(|a, b| b.cmp(a));
    let levels = &s.users_per_day;
    let mut jobs = Vec::new();
    for &users_per_day in &heaviest_first {
        for scenario in [Scenario::AaTest, Scenario::Harmful] {
            jobs.extend((0..s.runs).map(|run| Job {
                users_per_day,
                scenario,
                run,
            }));
        }
    }
    let outcomes = run_jobs(s, &jobs)?;
    let cell = |users_per_day: u32, scenario: Scenario| -> Vec<&RunOutcome> {
        jobs.iter()
            .zip(&outcomes)
            .filter(|(j, _)| j.users_per_day == users_per_day && j.scenario == scenario)
            .map(|(_, o)| o)
            .collect()
    };

    let mut md = String::new();
    let tuning = RolloutState::start(&s.cfg, 0, Some(s.baseline))?.tuning_s;
    let looks = s.days * 24;
    writeln!(
        md,
        "## Fuse simulation (seed {}, {} runs per cell)\n",
        s.seed, s.runs
    )?;
    writeln!(
        md,
        "Rollouts watched every hour for {} days ({looks} looks) on the real path: cohort records \
         → `build_tick_input` → `evaluate` → `RolloutState::apply`. Ramp {} %, guardrails \
         retention_d1, retention_d7, error_rate (k = 3, α_rb = {} and α_th = {} split over k), \
         min_retention_delta = {}, S = {:.0}, min {} eligible users per arm, lag {} h. Users: D1 \
         {:.0}% (harmful treatment {:.0}%), D7 {:.0}%, error within 24 h {:.0}%, adoption {:.0}% \
         (treatment). Rates with 95% Wilson intervals; hours since rollout start, median (p90) over \
         the runs where it happened.\n",
        s.days,
        s.cfg
            .ramp_steps_pct
            .iter()
            .map(|p| format!("{p}"))
            .collect::<Vec<_>>()
            .join(" → "),
        s.cfg.alpha_rollback,
        s.cfg.alpha_throttle,
        s.cfg.min_retention_delta,
        tuning,
        s.cfg.min_users_per_arm,
        s.cfg.ingestion_lag_hours,
        s.baseline * 100.0,
        s.harm * 100.0,
        D7_RETENTION * 100.0,
        ERROR_RATE * 100.0,
        ADOPTION * 100.0,
    )?;

    writeln!(md, "### A/A (no effect): false alarms\n")?;
    writeln!(
        md,
        "| users/day | fuse rollback | fuse throttle | SRM hold | reached 100% | naive 2-sided z on D1, hourly | naive 1-sided z on D1, hourly |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|")?;
    let mut aa_rules = BTreeMap::new();
    for &level in levels {
        let runs = cell(level, Scenario::AaTest);
        let n = runs.len();
        let count = |f: &dyn Fn(&RunOutcome) -> bool| runs.iter().filter(|o| f(o)).count();
        for rule in runs.iter().filter_map(|o| o.rollback_rule) {
            *aa_rules.entry(rule_name(rule)).or_insert(0u32) += 1;
        }
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} |",
            thousands(level),
            rate_ci(count(&|o| o.rollback_h.is_some()), n),
            rate_ci(count(&|o| o.first_throttle_h.is_some()), n),
            rate(count(&|o| o.srm_hold), n),
            rate(count(&|o| o.reached_full), n),
            rate_ci(count(&|o| o.naive_two_sided_h.is_some()), n),
            rate_ci(count(&|o| o.naive_one_sided_h.is_some()), n),
        )?;
    }

    writeln!(
        md,
        "\n### Harmful feature (D1 {:.0}% → {:.0}%): detection within {} days\n",
        s.baseline * 100.0,
        s.harm * 100.0,
        s.days
    )?;
    writeln!(
        md,
        "| users/day | fuse rollback | hours to rollback | fuse throttle | hours to first throttle | naive 2-sided: rollback, hours | naive 1-sided: rollback, hours |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|")?;
    let mut harm_rules = BTreeMap::new();
    for &level in levels {
        let runs = cell(level, Scenario::Harmful);
        let n = runs.len();
        let times = |f: &dyn Fn(&RunOutcome) -> Option<u32>| -> Vec<u32> {
            runs.iter().filter_map(|o| f(o)).collect()
        };
        for rule in runs.iter().filter_map(|o| o.rollback_rule) {
            *harm_rules.entry(rule_name(rule)).or_insert(0u32) += 1;
        }
        let rollback = times(&|o| o.rollback_h);
        let throttle = times(&|o| o.first_throttle_h);
        let naive2 = times(&|o| o.naive_two_sided_h);
        let naive1 = times(&|o| o.naive_one_sided_h);
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {}, {} | {}, {} |",
            thousands(level),
            rate_ci(rollback.len(), n),
            median_p90(rollback),
            rate_ci(throttle.len(), n),
            median_p90(throttle),
            rate(naive2.len(), n),
            median_p90(naive2),
            rate(naive1.len(), n),
            median_p90(naive1),
        )?;
    }
    writeln!(
        md,
        "\nRollback rules: A/A {}; harmful {}. The naive monitors only watch (they never act), so \
         they see the fuse's exposure path; after a fuse rollback they keep reading the cohort \
         already exposed.",
        rules_text(&aa_rules),
        rules_text(&harm_rules)
    )?;
    Ok(md)
}

fn rule_name(rule: DecisionRule) -> String {
    serde_json::to_value(rule)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{rule:?}"))
}

fn rules_text(rules: &BTreeMap<String, u32>) -> String {
    if rules.is_empty() {
        return "none".to_string();
    }
    rules
        .iter()
        .map(|(r, n)| format!("{r} × {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `20000` → `20 000` (as in METHODS.md).
fn thousands(n: u32) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(ch);
    }
    out
}

fn rate(x: usize, n: usize) -> String {
    if n == 0 {
        return "–".to_string();
    }
    format!("{:.1}%", 100.0 * x as f64 / n as f64)
}

/// Rate with its 95% Wilson score interval: it stays inside [0, 1] and is not degenerate
/// at 0 or n events, which are the common cases here.
fn rate_ci(x: usize, n: usize) -> String {
    let Some((lo, hi)) = wilson(x, n) else {
        return "–".to_string();
    };
    format!("{} ({:.1}–{:.1})", rate(x, n), 100.0 * lo, 100.0 * hi)
}

fn wilson(x: usize, n: usize) -> Option<(f64, f64)> {
    if n == 0 {
        return None;
    }
    let (x, n) = (x as f64, n as f64);
    let z2 = Z_975 * Z_975;
    let centre = (x + z2 / 2.0) / (n + z2);
    let half = Z_975 * (x * (n - x) / n + z2 / 4.0).sqrt() / (n + z2);
    Some(((centre - half).max(0.0), (centre + half).min(1.0)))
}

/// `median h (p90)` by nearest rank, or `–` when the event never happened.
fn median_p90(mut hours: Vec<u32>) -> String {
    if hours.is_empty() {
        return "–".to_string();
    }
    hours.sort_unstable();
    let rank = |q: f64| {
        let i = (q * hours.len() as f64).ceil() as usize;
        hours.get(i.saturating_sub(1)).copied().unwrap_or_default()
    };
    format!("{} h ({})", rank(0.5), rank(0.9))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_args(seed: u64) -> SimulateArgs {
        SimulateArgs {
            days: 3,
            runs: 3,
            seed,
            users_per_day: vec![1],
            baseline: 0.3,
            harm: 0.27,
            quick: false,
            min_retention_delta: 0.0,
            tuning_s: None,
            threads: 2,
        }
    }

    fn tiny_report(seed: u64) -> anyhow::Result<String> {
        report(&Settings::from_args(&tiny_args(seed))?)
    }

    #[test]
    fn a_tiny_simulation_renders_well_formed_tables_and_is_deterministic_for_a_seed(
    ) -> anyhow::Result<()> {
        let first = tiny_report(7)?;
        assert_eq!(first, tiny_report(7)?);
        let rows: Vec<&str> = first.lines().filter(|l| l.starts_with('|')).collect();
        assert_eq!(
            rows.len(),
            6,
            "two tables, each header + rule + one row:\n{first}"
        );
        assert!(rows.iter().all(|r| r.matches('|').count() == 8), "{first}");
        assert!(
            rows.iter().any(|r| r.starts_with("| 1 | 0.0% (0.0–56.1)")),
            "{first}"
        );
        assert!(first.contains("(seed 7, 3 runs per cell)"));
        let timed = run(&tiny_args(7))?;
        assert!(timed.starts_with(&first) && timed.contains("_Wall time: "));
        Ok(())
    }

    #[test]
    fn a_strongly_harmful_feature_at_high_traffic_is_rolled_back_within_days() -> anyhow::Result<()>
    {
        let s = Settings::from_args(&SimulateArgs {
            days: 5,
            users_per_day: vec![20_000],
            harm: 0.15,
            ..tiny_args(1)
        })?;
        let job = Job {
            users_per_day: 20_000,
            scenario: Scenario::Harmful,
            run: 0,
        };
        let out = simulate_run(&s, &job)?;
        // D1 is first readable at 2 days + 6 h lag = 54 h.
        assert!(
            out.rollback_h.is_some_and(|h| (54..=120).contains(&h)),
            "{out:?}"
        );
        assert_eq!(
            out.rollback_rule,
            Some(DecisionRule::RetentionOrActivationHarm)
        );
        assert!(out.naive_one_sided_h.is_some());
        Ok(())
    }

    #[test]
    fn invalid_options_are_rejected_with_the_option_named() {
        let bad = |a: SimulateArgs| {
            Settings::from_args(&a)
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        assert!(bad(SimulateArgs {
            runs: 0,
            ..tiny_args(1)
        })
        .is_err_and(|e| e.contains("--runs")));
        assert!(bad(SimulateArgs {
            harm: 1.5,
            ..tiny_args(1)
        })
        .is_err_and(|e| e.contains("--harm")));
        assert!(bad(SimulateArgs {
            users_per_day: vec![],
            ..tiny_args(1)
        })
        .is_err_and(|e| e.contains("--users-per-day")));
        assert!(bad(SimulateArgs {
            min_retention_delta: 0.5,
            ..tiny_args(1)
        })
        .is_err_and(|e| e.contains("min_retention_delta")));
    }

    #[test]
    fn quick_caps_the_runs_per_cell() -> anyhow::Result<()> {
        let s = Settings::from_args(&SimulateArgs {
            runs: 500,
            quick: true,
            ..tiny_args(1)
        })?;
        assert_eq!(s.runs, QUICK_RUNS);
        Ok(())
    }

    #[test]
    fn the_prng_is_deterministic_and_roughly_uniform() {
        let mut a = SplitMix64::new(42);
        let mut b = SplitMix64::new(42);
        let draws: Vec<f64> = (0..10_000).map(|_| a.next_f64()).collect();
        assert!(draws
            .iter()
            .all(|&x| x == b.next_f64() && (0.0..1.0).contains(&x)));
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!((mean - 0.5).abs() < 0.01, "{mean}");
        let hits = (0..10_000).filter(|_| a.chance(0.3)).count();
        assert!((2_800..3_200).contains(&hits), "{hits}");
    }

    #[test]
    fn users_arrive_evenly_spaced_at_the_daily_rate() {
        assert_eq!(arrival_ms(0, 24), 0);
        assert_eq!(arrival_ms(1, 24), MS_PER_HOUR);
        assert_eq!(arrival_ms(3, 2), 36 * MS_PER_HOUR);
    }

    #[test]
    fn report_helpers_format_rates_intervals_and_quantiles() {
        assert_eq!(thousands(20_000), "20 000");
        assert_eq!(thousands(999), "999");
        assert_eq!(rate_ci(0, 0), "–");
        assert_eq!(rate_ci(5, 200), "2.5% (1.1–5.7)");
        assert_eq!(median_p90(vec![]), "–");
        assert_eq!(median_p90((1..=10).rev().collect()), "5 h (9)");
    }
}
