// Evaluates IAM requests with @cloud-copilot/iam-simulate (npm; installed by `make static`
// into tools/node_modules): the permission tests (tests/iam/) send a JSON array of simulations
// on stdin, in the library's `Simulation` shape, and read one result per simulation on stdout:
// {"result": "Allowed" | "ExplicitlyDenied" | "ImplicitlyDenied"} or {"errors": ...} when the
// library refuses the request as invalid (an unknown action, a resource of the wrong type, a
// malformed policy).
import { runSimulation } from '@cloud-copilot/iam-simulate'

const chunks = []
for await (const chunk of process.stdin) chunks.push(chunk)
const simulations = JSON.parse(Buffer.concat(chunks).toString('utf8'))
const results = []
for (const simulation of simulations) {
  const answer = await runSimulation(simulation, {})
  if (answer.resultType === 'error') {
    results.push({ errors: answer.errors })
  } else {
    results.push({ result: answer.overallResult })
  }
}
process.stdout.write(JSON.stringify(results))
