// Uses the Fusebox web UI as a product manager would, in real headless Chromium.
// Usage: node e2e.mjs BASE_URL EMAIL PASSWORD OUT_DIR
// Expects a server seeded by tests/api/ui_e2e.rs: a flag `harmful` whose fuse has
// rolled back in `development`, and a quarantined event. Prints one line per step
// ("ok <step>") and exits non-zero at the first failure. Screenshots of every page,
// at 1280 px and 390 px wide, go to OUT_DIR.

import { execFileSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { chromium } from "playwright-core";

const [base, email, password, outDir] = process.argv.slice(2);
if (!base || !email || !password || !outDir) {
  console.error("usage: node e2e.mjs BASE_URL EMAIL PASSWORD OUT_DIR");
  process.exit(2);
}
mkdirSync(outDir, { recursive: true });

const executablePath =
  process.env.CHROMIUM_PATH || execFileSync("which", ["chromium"]).toString().trim();

const browser = await chromium.launch({
  executablePath,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});

function check(condition, message) {
  if (!condition) throw new Error(message);
}

async function expectText(page, selector, text) {
  const el = page.locator(selector).first();
  await el.waitFor({ timeout: 10000 });
  const content = await el.innerText();
  check(content.includes(text), `${selector} should contain "${text}", has "${content}"`);
}

/// Every visible form control has a label; the page does not scroll sideways.
async function checkPage(page, name, width) {
  const unlabeled = await page.evaluate(() =>
    [...document.querySelectorAll("input, select, textarea")]
      .filter((el) => el.type !== "hidden")
      .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute("aria-label"))
      .map((el) => el.name || el.id),
  );
  check(unlabeled.length === 0, `${name}: form fields without a label: ${unlabeled}`);
  const overflow = await page.evaluate(
    () => document.documentElement.scrollWidth - document.documentElement.clientWidth,
  );
  if (overflow > 1) {
    const culprits = await page.evaluate(() =>
      [...document.querySelectorAll("body *")]
        .filter((el) => el.getBoundingClientRect().right > document.documentElement.clientWidth + 1)
        .filter((el) => !el.closest(".scroll") || el.classList.contains("scroll"))
        .slice(0, 5)
        .map((el) => `${el.tagName.toLowerCase()}.${el.className}`),
    );
    check(false, `${name}: the page scrolls sideways by ${overflow}px at ${width}px (${culprits})`);
  }
}

/// Screenshots at desktop and phone width, with the layout checks at each.
async function shoot(page, name) {
  for (const width of [1280, 390]) {
    await page.setViewportSize({ width, height: 900 });
    await checkPage(page, name, width);
    await page.screenshot({ path: `${outDir}/${name}-${width}.png`, fullPage: true });
  }
  await page.setViewportSize({ width: 1280, height: 900 });
}

const steps = [];
function ok(step) {
  steps.push(step);
  console.log(`ok ${step}`);
}

// Every response is checked against the security headers the issue asks for.
function checkHeaders(response) {
  const h = response.headers();
  const csp = h["content-security-policy"] || "";
  check(csp.includes("frame-ancestors 'none'"), `CSP lacks frame-ancestors: ${csp}`);
  check(!/script-src[^;]*unsafe-inline/.test(csp), `CSP allows inline script: ${csp}`);
  check(h["x-content-type-options"] === "nosniff", "X-Content-Type-Options missing");
}

let exitCode = 0;
const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
const page = await context.newPage();
const consoleErrors = [];
// Pages answered with 4xx on purpose are logged as failed loads; anything else (a CSP
// violation, a missing stylesheet) is a failure.
page.on("console", (m) => {
  if (m.type() === "error" && !/Failed to load resource: the server responded with a status of 4(00|01|03|09|29)/.test(m.text())) {
    consoleErrors.push(m.text());
  }
});
try {
  // 1. An anonymous visit lands on the login page; log in with the keyboard.
  let response = await page.goto(`${base}/`);
  checkHeaders(response);
  check(page.url().includes("/ui/login"), `expected the login page, got ${page.url()}`);
  await shoot(page, "login");
  await page.keyboard.press("Tab"); // skip link
  await page.keyboard.press("Tab"); // brand link
  await page.keyboard.press("Tab"); // email (autofocus may already be there)
  await page.locator("#email").focus();
  await page.keyboard.type(email);
  await page.keyboard.press("Tab");
  await page.keyboard.type("wrong password");
  await page.keyboard.press("Enter");
  await expectText(page, ".error", "Wrong email or password");
  await page.fill("#password", password);
  await page.keyboard.press("Enter");
  await page.waitForURL(/\/ui\/(\?.*)?$/);
  await expectText(page, "h1", "Rollouts in");
  ok("log in (a wrong password is refused first)");

  // 2. The overview shows the rolled-back rollout first, flagged for attention.
  await expectText(page, ".attention-note", "need");
  const firstRow = page.locator("table.flags tbody tr").first();
  check((await firstRow.innerText()).includes("harmful"), "the rolled-back flag is listed first");
  await expectText(page, "table.flags tbody tr.attention .badge", "rolled back");
  await shoot(page, "overview");
  ok("overview shows the rolled-back fuse first");

  // 3. Create a flag and turn it on.
  await page.click("text=New flag");
  await page.fill("#name", "bad name with spaces");
  await page.click("button:has-text('Create flag')");
  await expectText(page, "#form-error", "name");
  await page.fill("#name", "checkout-redesign");
  await page.fill("#description", "New checkout flow");
  await shoot(page, "new-flag");
  await page.click("button:has-text('Create flag')");
  await expectText(page, ".notice", "Flag created");
  await expectText(page, "h1", "checkout-redesign");
  await page.click("button[aria-label='Turn checkout-redesign on in development']");
  await expectText(page, ".notice", "Flag state changed");
  await expectText(page, "tr.selected .badge", "on");
  ok("create a flag and turn it on");

  // 4. Set exposure (no fuse yet: the gradual rollout's percentage).
  await page.fill("#exposure", "30");
  await page.click("button:has-text('Set exposure')");
  await expectText(page, ".notice", "Exposure updated");
  await expectText(page, "#current-exposure", "30%");
  await expectText(page, "tr.selected td:nth-child(3)", "30% of users");
  await page.fill("#exposure", "130");
  await page.click("button:has-text('Set exposure')");
  await expectText(page, "#e-exposure", "0 to 100");
  ok("set exposure (and 130% is refused)");

  // 5. Arm a fuse, then edit a threshold to a bad value and see the API's validation.
  await page.click("button:has-text('Arm fuse')");
  await expectText(page, ".notice", "Fuse settings saved");
  await expectText(page, ".ramp li.current", "%");
  await page.fill("#f-alpha_rollback", "0.9");
  await page.click("button:has-text('Save thresholds')");
  await expectText(page, "#e-alpha_rollback", "");
  const err = await page.locator("#e-alpha_rollback").innerText();
  check(err.length > 0, "a validation message for alpha_rollback");
  check(
    (await page.getAttribute("#f-alpha_rollback", "aria-invalid")) === "true",
    "the bad field is marked invalid",
  );
  check((await page.inputValue("#f-alpha_rollback")) === "0.9", "the submitted value is kept");
  await page.fill("#f-alpha_rollback", "0.05");
  await page.fill("#f-min_hours_per_step", "12");
  await page.click("button:has-text('Save thresholds')");
  await expectText(page, ".notice", "Fuse settings saved");
  check((await page.inputValue("#f-min_hours_per_step")) === "12", "the saved value is shown");
  await shoot(page, "flag-armed");
  ok(`edit thresholds; a bad value is refused: "${err}"`);

  // 6. The rolled-back fuse: badge, charts, the analysis and the audit entry saying why.
  await page.goto(`${base}/ui/?env=development&status=attention`);
  await page.click("table.flags a:has-text('harmful')");
  await expectText(page, ".head .badge", "rolled back");
  const charts = page.locator("figure.chart");
  check((await charts.count()) >= 3, "retention, delta and exposure charts");
  check((await page.locator("polyline.line-treatment").count()) >= 1, "a treatment retention line");
  check((await page.locator("polygon.band-delta").count()) >= 1, "the delta's interval band");
  check((await page.locator("line.rule-tolerance").count()) >= 1, "the tolerance line");
  check((await page.locator("circle.marker-rollback").count()) >= 1, "a rollback marker");
  await expectText(page, "table.metrics", "retention_d1");
  await expectText(page, ".timeline", "fuse-rollback");
  await expectText(page, ".timeline", "retention or activation harm");
  await shoot(page, "flag-rolled-back");
  ok("a rolled-back fuse shows its badge, charts, analysis and why");

  // 7. Unlock it, after a confirmation that names who acts.
  await page.click("a:has-text('Unlock')");
  await expectText(page, "main", email);
  await shoot(page, "confirm-unlock");
  await page.click("button:has-text('Unlock fuse')");
  await expectText(page, ".notice", "Fuse unlocked");
  await expectText(page, ".head .badge", "ramping");
  await expectText(page, ".timeline", "fuse-unlock");
  await expectText(page, ".timeline", `user:${email}`);
  ok("unlock the fuse (confirmed, audited with who)");

  // 8. The audit log, filtered by flag and kind.
  await page.click("nav >> text=Audit log");
  await page.fill("#flag", "harmful");
  await page.fill("#kind", "fuse-unlock");
  await page.click("button:has-text('Filter')");
  await expectText(page, "tbody tr", `user:${email}`);
  check((await page.locator("tbody tr").count()) === 1, "exactly the unlock entry");
  await shoot(page, "audit");
  ok("audit log filters by flag and kind");

  // 9. Events: hourly counts and the quarantine, with replay/discard.
  await page.click("nav >> text=Events");
  await expectText(page, "main", "Ingestion per hour");
  await expectText(page, "main", "unknown_feature");
  await shoot(page, "events");
  await page.locator("button:has-text('Discard')").first().click();
  await expectText(page, ".notice", "discarded");
  ok("events page: counts, quarantine, discard");

  // 10. Admin pages: tokens (secret shown once) and users; my own role-bound token.
  await page.click("nav >> text=Tokens");
  await page.fill("#t-name", "web-sdk");
  await page.selectOption("#t-type", "frontend");
  await page.click("button:has-text('Create token')");
  await expectText(page, "h1", "created");
  const secret = await page.inputValue("#secret");
  check(/^\*:development\.[0-9a-f]{56}$/.test(secret), `a frontend token, got ${secret}`);
  await page.goto(`${base}/ui/tokens`);
  await shoot(page, "tokens");
  await page.click("nav >> text=Users");
  await page.fill("#u-email", "viewer@example.com");
  await page.fill("#u-password", "viewer-password-1");
  await page.selectOption("#u-role", "viewer");
  await page.click("button:has-text('Add user')");
  await expectText(page, ".notice", "User created");
  await shoot(page, "users");
  await page.click("nav >> text=" + email);
  await page.click("button:has-text('Create my token')");
  const mine = await page.inputValue("#secret");
  check(mine.startsWith("*:*."), `an admin-API token, got ${mine}`);
  const me = await fetch(`${base}/api/admin/api-tokens`, { headers: { Authorization: mine } });
  check(me.status === 200, `my admin token works on the API (${me.status})`);
  await page.goto(`${base}/ui/account`);
  await shoot(page, "account");
  ok("tokens and users pages; a token of my role works on the API");

  // 11. A viewer sees no edit controls and cannot post changes.
  await page.click("button:has-text('Log out')");
  await page.waitForURL(/\/ui\/login/);
  await page.fill("#email", "viewer@example.com");
  await page.fill("#password", "viewer-password-1");
  await page.click("button:has-text('Log in')");
  await page.waitForURL(/\/ui\/(\?.*)?$/);
  check((await page.locator("text=New flag").count()) === 0, "a viewer has no New flag button");
  await page.goto(`${base}/ui/projects/default/features/checkout-redesign?env=development`);
  check((await page.locator("button:has-text('Turn')").count()) === 0, "a viewer has no toggles");
  response = await page.goto(`${base}/ui/tokens`);
  check(response.status() === 403, `a viewer gets 403 on tokens, got ${response.status()}`);
  ok("a viewer reads but cannot change");

  check(consoleErrors.length === 0, `console errors: ${consoleErrors.join("; ")}`);
  console.log(JSON.stringify({ passed: steps.length, screenshots: outDir }));
} catch (e) {
  exitCode = 1;
  console.error(`FAILED after ${steps.length} steps at ${page.url()}: ${e.message}`);
  try {
    await page.screenshot({ path: `${outDir}/failure.png`, fullPage: true });
  } catch {}
} finally {
  await browser.close();
}
process.exit(exitCode);
