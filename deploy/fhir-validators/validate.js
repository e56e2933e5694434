// Validates FHIR R4 resources with FHIR.js (the `fhir` npm package), an implementation
// independent of HAPI's validator and of fhir.resources.
// stdin:  a JSON object {"<label>": <resource>, ...}
// stdout: a JSON object {"<label>": [{"severity", "location", "message"}, ...], ...}, every
//         message FHIR.js gave (an unexpected property counts as an error); exit 0.
// A malformed input is exit 2 with the reason on stderr.
"use strict";

const { Fhir } = require("fhir");

function readStdin() {
  return new Promise((resolve, reject) => {
    const chunks = [];
    process.stdin.on("data", (chunk) => chunks.push(chunk));
    process.stdin.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    process.stdin.on("error", reject);
  });
}

async function main() {
  let resources;
  try {
    resources = JSON.parse(await readStdin());
  } catch (error) {
    process.stderr.write(`validate.js: stdin is not JSON: ${error.message}\n`);
    process.exit(2);
  }
  if (resources === null || typeof resources !== "object" || Array.isArray(resources)) {
    process.stderr.write("validate.js: stdin must be a JSON object of label -> resource\n");
    process.exit(2);
  }
  const fhir = new Fhir(); // FHIR 4.0 (R4) definitions, bundled with the package
  const results = {};
  for (const [label, resource] of Object.entries(resources)) {
    const outcome = fhir.validate(resource, { errorOnUnexpected: true });
    results[label] = outcome.messages.map(({ severity, location, message }) => ({
      severity,
      location,
      message,
    }));
  }
  process.stdout.write(JSON.stringify(results));
}

main();
