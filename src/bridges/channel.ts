/**
 * What every bridge is made of: a channel (email, SMS, Discord) that carries a side of a session
 * to people who are not at a terminal, and the host (host.ts) that ties each conversation of the
 * channel to its session's side through the same /v1/realtime route a WebSocket side uses.
 *
 * A channel knows only its own service: it turns what arrives there into `Inbound` messages for
 * the host, and sends the deliveries the host gives it. The host owns everything else: which
 * session a conversation plays, the durable outbound queue and its retries, rate limits, the
 * marks that say what was sent, health and metrics.
 */
import type { Side } from '../../machines/session.logic.js';

export type BridgeName = 'email' | 'sms' | 'discord';
export const BRIDGE_NAMES: readonly BridgeName[] = ['email', 'sms', 'discord'];

/**
 * One conversation of a channel that plays a side of a session: an email thread, a phone
 * number, a Discord channel or thread. Kept durably by the host (bridges.jsonl, or Redis in
 * cluster mode), with what is still owed to it.
 */
export interface Conversation {
  /** Stable and unique across bridges: `<bridge>:<the channel's own key>` (e.g. `sms:+15551234567`). */
  readonly id: string;
  readonly bridge: BridgeName;
  /** The session's name as clients send it in `model`, and the tenant it lives in (null: the default). */
  readonly session: string;
  readonly tenant: string | null;
  readonly side: Side;
  /** Where deliveries go: an email address, a phone number, a Discord channel or thread id. */
  readonly peer: string;
  /** The channel's own state for the conversation (email: subject, message ids of the thread). */
  data: Record<string, unknown>;
  readonly opened: string;
  /** Set when the session ended or the person left (STOP); nothing more is sent or taken. */
  ended: string | null;
  /** Deliveries of the session to this side that the host has taken into its queue. */
  received: number;
  /** Deliveries the channel has accepted (sent); `received - sent` are still owed, in `queue`. */
  sent: number;
  /** Owed deliveries, oldest first, with their content (the queue survives a restart). */
  queue: QueuedDelivery[];
  /** Provider ids of the latest inbound messages taken as turns (a redelivery is not a new turn). */
  seen: string[];
}

export interface QueuedDelivery {
  /** The delivery's index in the session's deliveries to this side (0-based). */
  readonly index: number;
  readonly content: string;
  attempts: number;
  /** Epoch ms before which it is not tried again (back-off), 0 for now. */
  notBefore: number;
  lastError?: string;
  /** Epoch ms of its first failed attempt: it is retried for BRIDGE_RETRY_HOURS from then. */
  firstFailedAt?: number;
  /** Parts of it the channel has already sent (a long SMS or Discord message goes as several). */
  parts?: number;
}

/** A message that arrived on the channel for a conversation. */
export interface Inbound {
  readonly conversation: Conversation;
  /** The provider's id of the message (Message-ID, MessageSid, Discord message id): a redelivery is dropped. */
  readonly messageId: string;
  readonly text: string;
  /** Who sent it, as the channel names them (for logs and the console). */
  readonly from: string;
}

/** What the session said of an inbound message. */
export type Received =
  | { readonly ok: true; readonly duplicate: boolean }
  /** Refused: `code` is the proxy's error code; `retryable` when sending it again later may work. */
  | { readonly ok: false; readonly code: string; readonly message: string; readonly retryable: boolean };

/** A session's conversation, to be opened by the host (or found, when it exists). */
export interface Opening {
  readonly id: string;
  readonly session: string;
  readonly tenant: string | null;
  readonly side: Side;
  readonly peer: string;
  readonly data?: Record<string, unknown>;
}

/** What the host offers a channel. */
export interface ChannelHost {
  /** The conversation with this id, if open (or ended: check `ended`). */
  conversation(id: string): Conversation | undefined;
  /** Opens a conversation (a session's side starts being played on the channel), or returns the open one with this id. */
  open(opening: Opening): Promise<Conversation>;
  /** Saves a change of a conversation's channel data (e.g. the thread's latest Message-ID). */
  save(conversation: Conversation): Promise<void>;
  /** Ends a conversation (STOP, the person left); the side's connection lets go. */
  end(conversation: Conversation, reason: string): Promise<void>;
  /** Hands an inbound message to the session; resolves when it was taken (or refused). */
  receive(inbound: Inbound): Promise<Received>;
  /** Counts a message the channel took in but did not turn into a turn (a bounce, an auto-reply, a stranger). */
  ignored(reason: string, details: Record<string, unknown>): void;
}

/** Why a send failed: `retryable` false means it never will work (the queue entry is dropped, and that is logged). */
export class ChannelError extends Error {
  constructor(
    message: string,
    readonly retryable: boolean,
    readonly retryAfterMs?: number,
  ) {
    super(message);
  }
}

export interface ChannelHealth {
  /** Connected to the service (IMAP session, gateway) or, for a webhook channel, configured and answering. */
  readonly connected: boolean;
  readonly lastError: string | null;
  readonly lastErrorAt: string | null;
  /** Anything else the channel wants shown (e.g. the mailbox, the bot's user name). */
  readonly details?: Record<string, unknown>;
}

/**
 * Records that the first `parts` parts of a delivery were sent (durably, before it resolves), so
 * that after a crash the send resumes at the next part instead of repeating them.
 */
export type Progress = (parts: number) => Promise<void>;

export interface Channel {
  readonly name: BridgeName;
  /** Connects and starts handing inbound messages to the host. */
  start(host: ChannelHost): Promise<void>;
  /**
   * Sends one delivery of a conversation, resolving once the service accepted it. Throws
   * ChannelError. Where the service allows it the send is idempotent for the same conversation
   * and index (a deterministic Message-ID, a Discord nonce), so a send repeated after a crash is
   * not shown twice.
   */
  send(conversation: Conversation, delivery: QueuedDelivery, progress: Progress): Promise<void>;
  /** The other side's reply is being typed (a streamed reply under way): show it if the channel can. */
  typing?(conversation: Conversation): void;
  /** The session ended: tell the person if the channel has a way (optional). */
  ended?(conversation: Conversation, reason: string): Promise<void>;
  health(): ChannelHealth;
  close(): Promise<void>;
}
