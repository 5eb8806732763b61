/** LoRA fine-tuning from the command line (Node): options, the run, its progress line and the demo data. */
export { finetune, checkModelFolder, type FinetuneHooks, type FinetuneSummary } from './finetune';
export { parseFinetuneArgs, DEFAULT_OPTIONS, DEMO_DEFAULTS, USAGE, type FinetuneOptions, type ParsedCommand } from './options';
export { ProgressBar, formatProgress, formatDuration, type ProgressUpdate, type ProgressSink } from './progress';
export { DEMO_QA, qaJsonl, type QaPair } from './demo-data';
export { writeDemo, type DemoFiles } from './demo';
