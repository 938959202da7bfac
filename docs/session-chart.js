// The MotiveProxy session chart, generated from machines/session.machine.ts by `npm run chart`.
// Paste this file into the Stately visualizer (stately.ai/viz) or import it into Stately Studio.
// Guards, actions and delays are stubs here; their implementations live in machines/.
import { setup } from 'xstate';

export const sessionMachine = setup({
  guards: {
    bothSidesJoined: () => false,
    requestHeld: () => false,
    nothingHeld: () => false,
  },
  actions: {
    receiveTurn: () => {},
    retryTurn: () => {},
    forgetRequest: () => {},
    timeOutRequest: () => {},
    closeSession: () => {},
    renewTtl: () => {},
  },
  delays: {
    handshakeTimeout: 30000,
    turnTimeout: 30000,
    sessionTtl: 30000,
  },
}).createMachine({
  "id": "session",
  "initial": "EMPTY",
  "states": {
    "EMPTY": {
      "on": {
        "CONNECT_A": {
          "target": "AWAITING_PEER",
          "actions": [
            "receiveTurn",
            "renewTtl"
          ]
        },
        "CONNECT_B": {
          "target": "AWAITING_PEER",
          "actions": [
            "receiveTurn",
            "renewTtl"
          ]
        },
        "CLOSE": {
          "target": "CLOSING",
          "actions": "closeSession"
        }
      }
    },
    "AWAITING_PEER": {
      "always": {
        "guard": "bothSidesJoined",
        "target": "ACTIVE"
      },
      "on": {
        "CONNECT_A": {
          "actions": [
            "receiveTurn",
            "renewTtl"
          ]
        },
        "CONNECT_B": {
          "actions": [
            "receiveTurn",
            "renewTtl"
          ]
        },
        "MESSAGE_FROM_A": {
          "actions": [
            "receiveTurn",
            "renewTtl"
          ]
        },
        "MESSAGE_FROM_B": {
          "actions": [
            "receiveTurn",
            "renewTtl"
          ]
        },
        "RETRY_FROM_A": {
          "actions": [
            "retryTurn",
            "renewTtl"
          ]
        },
        "RETRY_FROM_B": {
          "actions": [
            "retryTurn",
            "renewTtl"
          ]
        },
        "DISCONNECT_A": {
          "actions": [
            "forgetRequest",
            "renewTtl"
          ]
        },
        "DISCONNECT_B": {
          "actions": [
            "forgetRequest",
            "renewTtl"
          ]
        },
        "TIMEOUT": {
          "actions": [
            "timeOutRequest",
            "renewTtl"
          ]
        },
        "SESSION_EXPIRED": {
          "guard": "nothingHeld",
          "target": "CLOSING",
          "actions": "closeSession"
        },
        "CLOSE": {
          "target": "CLOSING",
          "actions": "closeSession"
        }
      }
    },
    "ACTIVE": {
      "always": {
        "guard": "nothingHeld",
        "target": "DORMANT"
      },
      "on": {
        "MESSAGE_FROM_A": {
          "actions": [
            "receiveTurn",
            "renewTtl"
          ]
        },
        "MESSAGE_FROM_B": {
          "actions": [
            "receiveTurn",
            "renewTtl"
          ]
        },
        "RETRY_FROM_A": {
          "actions": [
            "retryTurn",
            "renewTtl"
          ]
        },
        "RETRY_FROM_B": {
          "actions": [
            "retryTurn",
            "renewTtl"
          ]
        },
        "DISCONNECT_A": {
          "actions": [
            "forgetRequest",
            "renewTtl"
          ]
        },
        "DISCONNECT_B": {
          "actions": [
            "forgetRequest",
            "renewTtl"
          ]
        },
        "TIMEOUT": {
          "actions": [
            "timeOutRequest",
            "renewTtl"
          ]
        },
        "CLOSE": {
          "target": "CLOSING",
          "actions": "closeSession"
        }
      }
    },
    "DORMANT": {
      "always": {
        "guard": "requestHeld",
        "target": "ACTIVE"
      },
      "on": {
        "MESSAGE_FROM_A": {
          "actions": [
            "receiveTurn",
            "renewTtl"
          ]
        },
        "MESSAGE_FROM_B": {
          "actions": [
            "receiveTurn",
            "renewTtl"
          ]
        },
        "RETRY_FROM_A": {
          "actions": [
            "retryTurn",
            "renewTtl"
          ]
        },
        "RETRY_FROM_B": {
          "actions": [
            "retryTurn",
            "renewTtl"
          ]
        },
        "SESSION_EXPIRED": {
          "target": "CLOSING",
          "actions": "closeSession"
        },
        "CLOSE": {
          "target": "CLOSING",
          "actions": "closeSession"
        }
      }
    },
    "CLOSING": {
      "always": {
        "target": "CLOSED"
      }
    },
    "CLOSED": {
      "type": "final"
    }
  }
});
