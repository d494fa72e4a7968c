// Parses an AsyncAPI document with the official parser and prints every diagnostic as one JSON
// line: {"severity": 0 (error) | 1 (warning) | 2 (information) | 3 (hint), "code", "message",
// "path"}; the last line is {"parsed": true|false}.
import { Parser, fromFile } from '@asyncapi/parser';

const { document, diagnostics } = await fromFile(new Parser(), process.argv[2]).parse();
for (const d of diagnostics) {
  console.log(JSON.stringify({ severity: d.severity, code: d.code, message: d.message, path: d.path }));
}
console.log(JSON.stringify({ parsed: document !== undefined }));
