// A consumer team's view of the catalog: generates TypeScript models of every event version
// from the AsyncAPI document with the official model generator (Modelina), writes a check that
// parses a sample of each event version into its model and writes it back, type-checks both
// with `tsc` (strict), and runs the check.
//
//   node models.mjs <asyncapi.json> <samples.json> <out dir>
//
// samples.json: { "<payload component name>": <a sample payload>, ... }. Prints one JSON line
// per model ({"model", "kind"}), one per sample ({"sample", "ok", "error"?}), then
// {"done": true}.
//
// Modelina 5.10.1 (the newest release) lists AsyncAPI versions up to 3.0.0 and reads any other
// as a plain JSON Schema; the catalog is on 3.1.0, whose changes do not touch what Modelina
// reads (payload schemas, messages, operations), so the document is handed to it as 3.0.0.
import { TypeScriptFileGenerator, TS_COMMON_PRESET } from '@asyncapi/modelina';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const [documentFile, samplesFile, out] = process.argv.slice(2);
const document = JSON.parse(fs.readFileSync(documentFile, 'utf8'));
const samples = JSON.parse(fs.readFileSync(samplesFile, 'utf8'));
if (document.asyncapi === '3.1.0') {
  document.asyncapi = '3.0.0';
}

fs.rmSync(out, { recursive: true, force: true });
const models = path.join(out, 'models');
fs.mkdirSync(models, { recursive: true });
const generator = new TypeScriptFileGenerator({
  modelType: 'class',
  presets: [{ preset: TS_COMMON_PRESET, options: { marshalling: true } }],
});
const generated = await generator.generateToFiles(document, models, { exportType: 'named' });
// Each model's properties: the name in the payload and the name in the class.
const properties = new Map();
for (const model of generated) {
  const props = model.model?.properties ?? {};
  properties.set(model.modelName, Object.values(props).map((p) => ({
    json: p.unconstrainedPropertyName, ts: p.propertyName,
  })));
}
for (const model of generated) {
  const kind = /^\s*(export\s+)?(class|type|enum|interface)\s/m.exec(model.result)?.[2] ?? 'other';
  console.log(JSON.stringify({ model: model.modelName, kind, any: /^\s*(export\s+)?type\s+\w+\s*=\s*any\s*;/m.test(model.result) }));
}

// The check: each sample parsed into its model and written back.
const names = Object.keys(samples).sort();
const check = [
  ...names.map((name) => `import { ${name} } from './models/${name}';`),
  `const samples: Record<string, any> = ${JSON.stringify(samples)};`,
  'function same(a: unknown, b: unknown): boolean {',
  "  if (typeof a !== 'object' || a === null || typeof b !== 'object' || b === null) return a === b;",
  '  const ka = Object.keys(a).sort(), kb = Object.keys(b).sort();',
  '  return ka.length === kb.length && ka.every((k, i) => k === kb[i] && same((a as any)[k], (b as any)[k]));',
  '}',
  'function parse(name: string, sample: unknown, model: { marshal(): string }): void {',
  '  const back = JSON.parse(model.marshal());',
  '  const ok = same(back, sample);',
  '  console.log(JSON.stringify(ok ? { sample: name, ok } : { sample: name, ok, error: `wrote back ${JSON.stringify(back)}` }));',
  '}',
  // Parsed from JSON, then built from a typed literal (which tsc checks against the model's
  // fields: a sample field of another type, or one the model lacks, fails to compile).
  ...names.map((name) => `parse('${name}', samples['${name}'], ${name}.unmarshal(samples['${name}']));`),
  ...names.map((name) => `parse('${name} (typed)', samples['${name}'], new ${name}(${typed(name)}));`),
  '',
].join('\n');
fs.writeFileSync(path.join(out, 'check.ts'), check);

/// A TypeScript literal of the constructor input of model `name` from its sample: primitive
/// values (and arrays of them) as typed literals, others left to the model (`as any`).
function typed(name) {
  const sample = samples[name];
  const fields = (properties.get(name) ?? [])
    .filter((p) => p.json !== undefined && p.json in sample)
    .map((p) => {
      const value = sample[p.json];
      const primitive = (v) => v === null || ['string', 'number', 'boolean'].includes(typeof v);
      const literal = primitive(value) || (Array.isArray(value) && value.every(primitive))
        ? JSON.stringify(value)
        : `${JSON.stringify(value)} as any`;
      return `${p.ts}: ${literal}`;
    });
  return `{ ${fields.join(', ')} }`;
}
fs.writeFileSync(
  path.join(out, 'tsconfig.json'),
  JSON.stringify({
    compilerOptions: {
      target: 'es2022', module: 'commonjs', moduleResolution: 'node', strict: true,
      outDir: 'dist', skipLibCheck: true,
    },
    include: ['check.ts', 'models/*.ts'],
  }, null, 2),
);
fs.writeFileSync(path.join(out, 'package.json'), JSON.stringify({ type: 'commonjs' }));
const here = path.dirname(fileURLToPath(import.meta.url));
const tsc = path.join(here, 'node_modules', 'typescript', 'bin', 'tsc');
execFileSync(process.execPath, [tsc, '-p', out], { stdio: 'inherit' });
const ran = execFileSync(process.execPath, [path.join(out, 'dist', 'check.js')], { encoding: 'utf8' });
process.stdout.write(ran);
console.log(JSON.stringify({ done: true }));
