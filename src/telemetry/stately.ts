/**
 * Live inspection in Stately's inspector: a local bridge (HTTP page + WebSocket relay, from
 * @statelyai/inspect/server) and a WebSocket inspector that the actor system's tap feeds.
 * Open http://localhost:INSPECT_PORT in a browser to watch sessions change state.
 */
import { createWebSocketInspector } from '@statelyai/inspect';
import { createInspectorServer } from '@statelyai/inspect/server';
import type { InspectionEvent } from 'xstate';

export interface StatelyInspection {
  readonly url: string;
  readonly inspect: (event: InspectionEvent) => void;
  stop(): void;
}

export function startStatelyInspection(port: number): StatelyInspection {
  const server = createInspectorServer({ port, autoOpen: false });
  const inspector = createWebSocketInspector({ url: `ws://127.0.0.1:${port}` });
  return {
    url: `http://localhost:${port}`,
    inspect: (event) => inspector.inspect.next?.(event),
    stop() {
      inspector.stop();
      server.stop();
    },
  };
}
