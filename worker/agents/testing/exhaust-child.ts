/**
 * Run by memories.test.ts in a child Node process under `ulimit -v` (a small address space):
 * holds Wasm memories until the host refuses one, then runs agents and prints their error codes
 * as JSON. A refusal by the host is NODE_RESOURCE_EXHAUSTED; an agent past its own cap stays
 * AGENT_MEMORY_LIMIT.
 */
import { prepareAgentModule } from '../module-cache';
import { runAgentInThread } from '../run';
import { runRequest } from './request';
import { buildWatAgents } from './wat-agents';

const bytes = await buildWatAgents();
const req = (name: string, memoryMB: number) => runRequest(name, { taskId: 't' }, { memoryMB });
const codeOf = (o: ReturnType<typeof runAgentInThread>): string => (o.ok ? 'ok' : o.error.code);
const echo = await prepareAgentModule(bytes.echo, 16);
const bomb = await prepareAgentModule(bytes.bomb, 64);
const out: Record<string, string> = {};
// Within the cap and with room: the bomb ends at its own cap.
out.bombWithRoom = codeOf(runAgentInThread(bomb.module, req('bomb', 64), { capPages: bomb.capPages, memory: bomb.memory }));
// Fill the address space, keeping one memory to hand to the grow case.
const held: WebAssembly.Memory[] = [];
for (;;) {
  try {
    held.push(new WebAssembly.Memory({ initial: 1, maximum: 1024 }));
  } catch {
    break;
  }
}
out.held = String(held.length);
out.echoNoRoom = codeOf(runAgentInThread(echo.module, req('echo', 16), { capPages: echo.capPages, memory: echo.memory }));
process.stdout.write(JSON.stringify(out));
