// Makes sure Debian's Chromium is there for the browser tests: installs it with
// apt when running as root, otherwise stops with a message naming the package.
import { existsSync } from 'node:fs';
import { execSync } from 'node:child_process';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

if (!existsSync(CHROMIUM)) {
  const root = typeof process.getuid === 'function' && process.getuid() === 0;
  if (!root) {
    console.error(`Browser tests need Chromium at ${CHROMIUM}. Install the Debian package "chromium" (sudo apt-get install -y chromium) or set CHROMIUM_PATH.`);
    process.exit(1);
  }
  console.log(`Chromium not found at ${CHROMIUM}: installing the Debian package "chromium" with apt-get…`);
  try {
    execSync('apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium', { stdio: 'inherit' });
  } catch {
    console.error('apt-get could not install "chromium"; install it by hand (apt-get install -y chromium) and rerun npm test.');
    process.exit(1);
  }
  if (!existsSync(CHROMIUM)) {
    console.error(`"chromium" was installed but ${CHROMIUM} is still missing; set CHROMIUM_PATH to its binary.`);
    process.exit(1);
  }
}
console.log(`browser: ${CHROMIUM}`);
