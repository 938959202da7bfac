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
    listen: () => {},
    forgetRequest: () => {},
    timeOutRequest: () => {},
    closeSession: () => {},
  },
  delays: {
    handshakeTimeout: 30000,
    turnTimeout: 30000,
    streamTurnTimeout: 30000,
    sessionTtl: 30000,
    unjoinedTtl: 30000,
  },
}).createMachine({
  "id": "session",
  "initial": "EMPTY",
  "on": {
    "EVICT": {
      "target": ".CLOSED"
    }
  },
  "states": {
    "EMPTY": {
      "on": {
        "CONNECT_A": {
          "target": "AWAITING_PEER",
          "actions": "receiveTurn"
        },
        "CONNECT_B": {
          "target": "AWAITING_PEER",
          "actions": "receiveTurn"
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
      "after": {
        "unjoinedTtl": {
          "guard": "nothingHeld",
          "target": "CLOSING",
          "actions": "closeSession"
        }
      },
      "on": {
        "CONNECT_A": {
          "actions": "receiveTurn",
          "target": "AWAITING_PEER",
          "reenter": true
        },
        "CONNECT_B": {
          "actions": "receiveTurn",
          "target": "AWAITING_PEER",
          "reenter": true
        },
        "MESSAGE_FROM_A": {
          "actions": "receiveTurn",
          "target": "AWAITING_PEER",
          "reenter": true
        },
        "MESSAGE_FROM_B": {
          "actions": "receiveTurn",
          "target": "AWAITING_PEER",
          "reenter": true
        },
        "RETRY_FROM_A": {
          "actions": "retryTurn",
          "target": "AWAITING_PEER",
          "reenter": true
        },
        "RETRY_FROM_B": {
          "actions": "retryTurn",
          "target": "AWAITING_PEER",
          "reenter": true
        },
        "LISTEN_A": {
          "actions": "listen",
          "target": "AWAITING_PEER",
          "reenter": true
        },
        "LISTEN_B": {
          "actions": "listen",
          "target": "AWAITING_PEER",
          "reenter": true
        },
        "DISCONNECT_A": {
          "actions": "forgetRequest",
          "target": "AWAITING_PEER",
          "reenter": true
        },
        "DISCONNECT_B": {
          "actions": "forgetRequest",
          "target": "AWAITING_PEER",
          "reenter": true
        },
        "TIMEOUT": {
          "actions": "timeOutRequest",
          "target": "AWAITING_PEER",
          "reenter": true
        },
        "RESUMED": {
          "target": "AWAITING_PEER",
          "reenter": true
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
          "actions": "receiveTurn"
        },
        "MESSAGE_FROM_B": {
          "actions": "receiveTurn"
        },
        "RETRY_FROM_A": {
          "actions": "retryTurn"
        },
        "RETRY_FROM_B": {
          "actions": "retryTurn"
        },
        "LISTEN_A": {
          "actions": "listen"
        },
        "LISTEN_B": {
          "actions": "listen"
        },
        "DISCONNECT_A": {
          "actions": "forgetRequest"
        },
        "DISCONNECT_B": {
          "actions": "forgetRequest"
        },
        "TIMEOUT": {
          "actions": "timeOutRequest"
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
      "after": {
        "sessionTtl": {
          "target": "CLOSING",
          "actions": "closeSession"
        }
      },
      "on": {
        "MESSAGE_FROM_A": {
          "actions": "receiveTurn",
          "target": "DORMANT",
          "reenter": true
        },
        "MESSAGE_FROM_B": {
          "actions": "receiveTurn",
          "target": "DORMANT",
          "reenter": true
        },
        "RETRY_FROM_A": {
          "actions": "retryTurn",
          "target": "DORMANT",
          "reenter": true
        },
        "RETRY_FROM_B": {
          "actions": "retryTurn",
          "target": "DORMANT",
          "reenter": true
        },
        "LISTEN_A": {
          "actions": "listen",
          "target": "DORMANT",
          "reenter": true
        },
        "LISTEN_B": {
          "actions": "listen",
          "target": "DORMANT",
          "reenter": true
        },
        "RESUMED": {
          "target": "DORMANT",
          "reenter": true
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
