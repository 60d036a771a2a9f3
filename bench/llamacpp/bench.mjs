// llama.cpp on the same GGUF file as `skingpt bench`, for issue 2's side-by-side
// figures: prompt processing of 128 tokens (one batch) and generation of 64
// tokens one at a time, best of N repetitions, 2 threads, CPU only, an F16 KV
// cache (llama.cpp's default). llama.cpp comes from node-llama-cpp's prebuilt
// CPU binaries (all x86-64 variants, chosen at run time like llama-bench's
// GGML_CPU_ALL_VARIANTS build), pinned in package.json.
//
//   cd bench/llamacpp && npm ci && node bench.mjs MODEL.gguf [-t THREADS] [-r REPS] [--json]
//
// Not part of CI (a 7B file takes minutes). Random-weight files from
// `skingpt synth` are standard llama GGUFs and load unchanged.
import { getLlama, LlamaLogLevel } from 'node-llama-cpp';

const args = process.argv.slice(2);
let model = '', threads = 2, reps = 3, json = false;
for (let i = 0; i < args.length; ++i) {
  if (args[i] === '-t') threads = Number(args[++i]);
  else if (args[i] === '-r') reps = Number(args[++i]);
  else if (args[i] === '--json') json = true;
  else if (args[i] === '-h' || args[i] === '--help') {
    console.log('usage: node bench.mjs MODEL.gguf [-t THREADS] [-r REPS] [--json]');
    process.exit(0);
  } else model = args[i];
}
if (!model || !(threads >= 1) || !(reps >= 1)) {
  console.error('usage: node bench.mjs MODEL.gguf [-t THREADS] [-r REPS] [--json]');
  process.exit(2);
}

const nPrompt = 128, nGen = 64;
const llama = await getLlama({ gpu: false, build: 'never', maxThreads: threads, logLevel: LlamaLogLevel.error });
const m = await llama.loadModel({ modelPath: model, gpuLayers: 0, useMmap: true });
const ctx = await m.createContext({ contextSize: 256, batchSize: nPrompt, threads, flashAttention: false });
const seq = ctx.getSequence();

// Random ids away from the special tokens, the same for every repetition.
let state = 1;
const rand = () => (state = (state * 1103515245 + 12345) % 2147483648);
const vocab = 32000;  // the Llama-2 vocabulary of synth's files
const toks = Array.from({ length: nPrompt }, () => 3 + (rand() % (vocab - 3)));

await seq.evaluateWithoutGeneratingNewTokens([toks[0]]);  // warm-up
let pp = 0, tg = 0;
for (let r = 0; r < reps; ++r) {
  await seq.clearHistory();
  let t0 = performance.now();
  await seq.evaluateWithoutGeneratingNewTokens(toks);
  pp = Math.max(pp, nPrompt / ((performance.now() - t0) / 1000));
  await seq.clearHistory();
  t0 = performance.now();
  // The decode loop: each generated token is fed back (greedy), one position per step.
  let n = 0;
  for await (const _ of seq.evaluate([toks[0]], { temperature: 0 })) if (++n === nGen) break;
  tg = Math.max(tg, nGen / ((performance.now() - t0) / 1000));
}
const out = { engine: 'llama.cpp (node-llama-cpp 3.21.1)', model, threads, pp_tok_s: pp, tg_tok_s: tg };
if (json) console.log(JSON.stringify(out));
else console.log(`llama.cpp  ${model}  ${threads} threads\npp${nPrompt}  ${pp.toFixed(2)} tok/s\ntg${nGen}   ${tg.toFixed(2)} tok/s`);
await ctx.dispose();
await m.dispose();
await llama.dispose();
