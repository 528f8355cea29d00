import tap, { type Test } from 'tap';
import { existsSync } from 'node:fs';

/** A page's frame (the page itself, or an iframe in it). */
export interface FrameLike {
  url(): string;
  waitForFunction(expr: string): Promise<unknown>;
  evaluate(expr: string): Promise<unknown>;
  click(selector: string): Promise<void>;
}

/** The parts of playwright-core the dashboard tests use. */
export interface PlaywrightLike {
  chromium: {
    launch(o: object): Promise<{
      close(): Promise<void>;
      newPage(): Promise<
        FrameLike & {
          goto(url: string): Promise<unknown>;
          /** Runs `script` in every document of the page before its own scripts. */
          addInitScript(script: string): Promise<void>;
          screenshot(o: { path: string }): Promise<unknown>;
          mainFrame(): FrameLike;
          frames(): FrameLike[];
        }
      >;
    }>;
  };
}

/** Debian's chromium, which playwright-core drives (it downloads no browser). */
export const CHROMIUM = '/usr/bin/chromium';

/** Loads `playwright-core` (a devDependency); null when it is not installed. */
async function loadPlaywright(): Promise<PlaywrightLike | null> {
  try {
    const name = 'playwright-core';
    return (await import(name)) as PlaywrightLike;
  } catch {
    return null;
  }
}

export const playwright = await loadPlaywright();
/** Why the browser tests cannot run here ('' when they can). */
export const noBrowser = [existsSync(CHROMIUM) ? '' : `${CHROMIUM} not found`, playwright ? '' : 'playwright-core not installed'].filter(Boolean).join(', ');

/**
 * A test that drives Chromium. Without a browser it fails, saying what to install: the dashboard must not go
 * untested without anyone noticing.
 */
export function browserTest(name: string, fn: (t: Test) => Promise<void>): void {
  tap.test(name, async (t) => {
    if (noBrowser) {
      t.fail(`the dashboard's browser test cannot run (${noBrowser}): apt-get install chromium, npm install (.ci/run does both)`);
      return;
    }
    await fn(t);
  });
}

/** A headless Chromium, closed when `t` ends; `args`: more command-line switches. */
export async function launchChromium(t: Test, args: readonly string[] = []): ReturnType<PlaywrightLike['chromium']['launch']> {
  const browser = await playwright!.chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run', ...args],
  });
  t.teardown(() => browser.close());
  return browser;
}
