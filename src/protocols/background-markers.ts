// The texts by which chat UIs' background requests are recognised, and the answer each UI parses.
// Every marker is the stable leading text of a prompt the UI ships, copied from its source; the
// requests themselves are kept as fixtures in test/fixtures/chat-ui-requests/ (one per wording),
// and docs/chat-uis.md lists them for users.
//
// Sources (public repositories):
// - open-webui/open-webui backend/open_webui/config.py (task templates), utils/middleware.py
//   (tool selection), routers/tasks.py, utils/misc.py ("USER: ..." history lines)
// - danny-avila/agents src/utils/title.ts; danny-avila/LibreChat api/app/clients (older titles)
// - lobehub/lobe-chat packages/prompts/src/chains/*.ts (titles, chips, summaries, agent meta)
// - SillyTavern/SillyTavern public/scripts/extensions/memory/index.js (Summarize extension)
// - chatboxai/chatbox src/renderer/packages/prompts.ts, src/renderer/utils/model-tester.ts
// - enricoros/big-AGI src/modules/aifn/autotitle/autoTitle.ts, aifn/auto-chat-follow-ups
// - janhq/jan thread-title prompt (ModelHandler.tsx, web-app thread-title helper)

export type BackgroundTaskKind =
  | 'title'
  | 'librechat_title'
  | 'tags'
  | 'follow_ups'
  | 'queries'
  | 'autocomplete'
  | 'emoji'
  | 'image_prompt'
  | 'connection_test'
  | 'summary'
  | 'tool_selection'
  | 'suggestions'
  | 'agent_meta'
  | 'diagram'
  | 'ui_generation';

/** How short a title must be, and in what form, for the UI that asked for it. */
export interface TitleRules {
  readonly maxWords?: number;
  readonly maxChars?: number;
  /** the character limit the prompt itself states (Chatbox writes it into the prompt) */
  readonly charLimitInPrompt?: RegExp;
  /** letters, digits and spaces only (the UI strips the rest, or asks for no punctuation) */
  readonly noPunctuation?: boolean;
  readonly lowercase?: boolean;
}

/** What the proxy answers, in the form the UI parses. */
export type Answer =
  | { readonly type: 'title'; readonly format: 'plain' | 'json' | 'structured'; readonly rules?: TitleRules }
  | { readonly type: 'text'; readonly text: string }
  | { readonly type: 'json'; readonly value: Readonly<Record<string, unknown>> }
  | { readonly type: 'image_prompt' }
  /** the "nothing to do" arguments of the request's only tool (big-AGI's forced follow-up calls) */
  | { readonly type: 'tool_arguments' };

/** Where a marker is looked for: the request's last message, or its first system/developer message. */
export type Place = 'last' | 'system' | 'either';

export interface Marker {
  readonly kind: BackgroundTaskKind;
  readonly place: Place;
  readonly start: RegExp;
  readonly answer: Answer;
}

const TASK = String.raw`^###\s*Task:\s*`;
const json = (value: Record<string, unknown>): Answer => ({ type: 'json', value });
const text = (value: string): Answer => ({ type: 'text', text: value });
const title = (format: 'plain' | 'json' | 'structured', rules?: TitleRules): Answer => ({ type: 'title', format, ...(rules ? { rules } : {}) });

export const NEUTRAL_EMOJI = '🙂';

// LobeChat asks for no punctuation; Jan's cleanTitle() strips it and keeps at most 10 words.
const LOBECHAT_TITLE: TitleRules = { noPunctuation: true, maxChars: 50 };
const LOBECHAT_JSON_TITLE: TitleRules = { noPunctuation: true, maxChars: 80 };
const JAN_TITLE: TitleRules = { noPunctuation: true };
// Chatbox states its limit in the prompt (30 characters now, 10 in older builds, which cut to it).
const CHATBOX_TITLE: TitleRules = { charLimitInPrompt: /\b(\d+) characters (?:max|or less)\b|\bwithin (\d+) characters\b/ };
const BIG_AGI_TITLE: TitleRules = { lowercase: true };

export const MARKERS: readonly Marker[] = [
  // --- Open WebUI (one user message holding the whole task) ---
  // >= 0.5: "Generate a concise, 3-5 word title with an emoji summarizing ..." and the newer
  // "Generate a concise title summarizing the chat history." Both answer { "title": ... }.
  { kind: 'title', place: 'last', start: new RegExp(`${TASK}Generate a concise\\b[^\\n]*?\\btitle\\b[^\\n]*?summarizing the chat history`, 'i'), answer: title('json') },
  // <= 0.4 asked for bare text ("RESPOND ONLY WITH THE TITLE TEXT").
  { kind: 'title', place: 'last', start: /^Create a concise, 3-5 word title with an emoji as a title for the (?:chat history|prompt)/i, answer: title('plain') },
  { kind: 'tags', place: 'last', start: new RegExp(`${TASK}Generate 1-3 broad tags categorizing the main themes of the chat history`, 'i'), answer: json({ tags: [] }) },
  { kind: 'follow_ups', place: 'last', start: new RegExp(`${TASK}Suggest 3-5 relevant follow-up questions`, 'i'), answer: json({ follow_ups: [] }) },
  {
    kind: 'queries', place: 'last',
    start: new RegExp(`${TASK}(?:Analyze the chat history to determine the necessity of generating search queries|Based on the chat history, determine whether a search is necessary)`, 'i'),
    answer: json({ queries: [] }),
  },
  { kind: 'autocomplete', place: 'last', start: new RegExp(`${TASK}You are an autocompletion system\\.`, 'i'), answer: json({ text: '' }) },
  { kind: 'emoji', place: 'last', start: /^Your task is to reflect the speaker's likely facial expression through a fitting emoji/i, answer: text(NEUTRAL_EMOJI) },
  // The shipped template really says "for am image generation task".
  { kind: 'image_prompt', place: 'last', start: new RegExp(`${TASK}Generate a detailed prompt for a[mn]? image generation task`, 'i'), answer: { type: 'image_prompt' } },
  // Tool selection in "Default" function calling: the task is the system message, the query the user's.
  // An empty list selects no tool, and Open WebUI goes on with the real chat turn.
  {
    kind: 'tool_selection', place: 'system',
    start: /^Available Tools: [\s\S]*?\bYour task is to choose and return the correct tool\(s\) from the list of available tools based on the query\./,
    answer: json({ tool_calls: [] }),
  },

  // --- LibreChat ---
  // Agents, default "completion" title method; older and newer wordings share this head.
  { kind: 'librechat_title', place: 'last', start: /^Provide a concise, 5-word-or-less title for the conversation\b/i, answer: title('plain') },
  // Agents "structured" title method, parsed as { language, title }.
  {
    kind: 'librechat_title', place: 'last',
    start: /^Analyze this conversation and provide:\s*1\. The detected language of the conversation\s*2\. A concise title/i,
    answer: title('structured'),
  },
  // Older OpenAIClient titleConvo ("Please generate " + titleInstruction ... "||>Title:").
  { kind: 'librechat_title', place: 'last', start: /^Please generate a concise, 5-word-or-less title for the conversation\b/i, answer: title('plain') },
  // Assistants endpoint title.js.
  { kind: 'librechat_title', place: 'last', start: /^Please generate a concise title \(max 40 characters\) for a conversation that starts with:/i, answer: title('plain') },

  // --- LobeChat (few-shot chains: the task is the first system message, the input comes last) ---
  {
    kind: 'title', place: 'system',
    start: /^You are a professional conversation summarizer\. Generate a concise title that captures the essence of the conversation\.[\s\S]*?Return one JSON object with a single "title" string/,
    answer: title('json', LOBECHAT_JSON_TITLE),
  },
  { kind: 'title', place: 'system', start: /^You are a professional conversation summarizer\. Generate a concise title that captures the essence of the conversation\./, answer: title('plain', LOBECHAT_TITLE) },
  { kind: 'title', place: 'system', start: /^你是一名擅长会话的助理，你需要将用户的会话总结为 ?10 ?个字以内的标题/, answer: title('plain', LOBECHAT_TITLE) },
  { kind: 'suggestions', place: 'system', start: /^You are a sidecar that extracts 0-4 quick-reply suggestions from the last assistant message\./, answer: json({ chips: [] }) },
  // Summaries: an empty one is stored as nothing, where any text would be injected into later prompts.
  { kind: 'summary', place: 'system', start: /^You're an assistant who's good at extracting key takeaways from conversations and summarizing them\./, answer: text('') },
  {
    kind: 'summary', place: 'system',
    start: /^Summarize the conversation for future reference\.\s*Requirements:\s*- Use the same primary language as the conversation\./,
    answer: json({ description: '', summary: '' }),
  },
  // Agent meta (the "auto" buttons of an agent's settings): a placeholder the user can overwrite.
  { kind: 'agent_meta', place: 'system', start: /^你是一名擅长起名的起名大师/, answer: text('Assistant') },
  { kind: 'agent_meta', place: 'system', start: /^你是一名擅长技能总结的助理/, answer: text('') },
  { kind: 'agent_meta', place: 'system', start: /^你是一名擅长会话标签总结的助理/, answer: text('') },
  { kind: 'agent_meta', place: 'system', start: /^You are an emoji expert who selects the most appropriate emoji to represent concepts, emotions, or topics\./, answer: text(NEUTRAL_EMOJI) },

  // --- SillyTavern Summarize extension, source "Main API": appended last as a system message
  // (Classic builder) or passed as the system prompt (Raw builders). Empty = nothing stored.
  {
    kind: 'summary', place: 'either',
    start: /^Ignore previous instructions\. Summarize the most important facts and events in the story so far\./,
    answer: text(''),
  },

  // --- Chatbox: one user message naming the conversation ---
  { kind: 'title', place: 'last', start: /^Based on the chat history, give this conversation a name\.[\s\S]*\bThe name is:\s*$/, answer: title('plain', CHATBOX_TITLE) },
  { kind: 'title', place: 'last', start: /^Name the conversation based on the chat records\.[\s\S]*\bThe conversation is named:\s*$/, answer: title('plain', CHATBOX_TITLE) },

  // --- big-AGI ---
  { kind: 'title', place: 'system', start: /^You are an AI conversation titles assistant who specializes in creating expressive yet few-words chat titles\./, answer: title('plain', BIG_AGI_TITLE) },
  { kind: 'title', place: 'last', start: /^Analyze the given short conversation \(every line is truncated\) and extract a concise chat title/, answer: title('plain', BIG_AGI_TITLE) },
  // Opt-in follow-ups that force a call of their one tool; a low rating makes big-AGI drop the placeholder.
  { kind: 'diagram', place: 'system', start: /^You are an expert AI assistant skilled in creating diagrams\./, answer: { type: 'tool_arguments' } },
  { kind: 'diagram', place: 'last', start: /^Analyze the conversation and call draw_plantuml_diagram\b/, answer: { type: 'tool_arguments' } },
  { kind: 'ui_generation', place: 'system', start: /^You are a helpful AI assistant skilled in creating user interfaces\./, answer: { type: 'tool_arguments' } },
  { kind: 'ui_generation', place: 'last', start: /^Analyze the conversation and call generate_web_ui\b/, answer: { type: 'tool_arguments' } },

  // --- Jan: thread title from the first message (two wordings) ---
  { kind: 'title', place: 'last', start: /^Summarize in a \d+-word Title\. Give the title only\./, answer: title('plain', JAN_TITLE) },
];

/** LobeChat's structured-output schema names (response_format json_schema): the most reliable marker. */
export const SCHEMA_NAMES: Readonly<Record<string, { kind: BackgroundTaskKind; title?: TitleRules }>> = {
  topic_title: { kind: 'title', title: LOBECHAT_JSON_TITLE },
  follow_up_suggestions: { kind: 'suggestions' },
  topic_auto_summary: { kind: 'summary' },
};

/** Open WebUI's TASKS values; only seen if a client forwards `metadata` (Open WebUI's own router strips it). */
export const OPEN_WEBUI_TASKS: Readonly<Record<string, { kind: BackgroundTaskKind; answer: Answer }>> = {
  title_generation: { kind: 'title', answer: title('json') },
  tags_generation: { kind: 'tags', answer: json({ tags: [] }) },
  follow_up_generation: { kind: 'follow_ups', answer: json({ follow_ups: [] }) },
  query_generation: { kind: 'queries', answer: json({ queries: [] }) },
  autocomplete_generation: { kind: 'autocomplete', answer: json({ text: '' }) },
  emoji_generation: { kind: 'emoji', answer: text(NEUTRAL_EMOJI) },
  image_prompt_generation: { kind: 'image_prompt', answer: { type: 'image_prompt' } },
};

// Admin-customised Open WebUI templates keep the <chat_history> block and the JSON key the parser reads.
export const JSON_KEYS: readonly { key: RegExp; kind: BackgroundTaskKind; answer: Answer }[] = [
  { key: /"follow_ups"\s*:/, kind: 'follow_ups', answer: json({ follow_ups: [] }) },
  { key: /"queries"\s*:/, kind: 'queries', answer: json({ queries: [] }) },
  { key: /"tags"\s*:/, kind: 'tags', answer: json({ tags: [] }) },
  { key: /"title"\s*:/, kind: 'title', answer: title('json') },
];

// Titles asked for by UIs not listed above ("Generate a short title for this chat ..."). The
// request must open with it and carry a second sign of a UI: a transcript, or "only the title".
// A person asking for an essay title rarely does both.
export const GENERIC_TITLE_REQUEST = /^(?:generate|create|write|provide|give)\b.{0,40}\b(?:short|concise|brief)\b.{0,30}\btitle\b.{0,40}\b(?:for|of|summariz)/i;
export const TRANSCRIPT_SIGN = /<chat_history>|<conversation>|```|^[ \t]*(?:[-*][ \t]*)?(?:user|assistant|human|ai)[ \t]*:|\bHere is the message:/im;
export const ONLY_THE_TITLE_SIGN =
  /\bonly (?:return|respond with|reply with|output|give) the title\b|\b(?:return|respond with|reply with|output|give) only the title\b|\bgive the title only\b|\bnothing else\b/i;

// Connection tests: SillyTavern's "Test Message" and Chatbox's basic model test send a lone "Hi",
// LobeChat's "Check" a lone "hello" (exact text, case-sensitive). A lone lowercase "hello" is also
// what people and agents open a conversation with, so it counts only with LobeChat's own token
// cap beside it: its check sends max_tokens 256. Any cap would not do: the Anthropic Messages API
// requires one, so every Anthropic SDK call carries one (1024 in its examples).
export const LOBECHAT_CHECK_MAX_TOKENS = 256;
export const GREETING_TESTS: readonly { readonly text: string; readonly needsLobeChatCap: boolean }[] = [
  { text: 'Hi', needsLobeChatCap: false },
  { text: 'hello', needsLobeChatCap: true },
];

export function greetingTestReply(greeting: string): string {
  return `${greeting === 'hello' ? 'Hello' : 'Hi'}! This is MotiveProxy: a lone "${greeting}" is how chat UIs test their connection, so the proxy answered it itself and forwarded nothing. To talk to the other side of this session, say anything else (or turn this off with ANSWER_BACKGROUND_TASKS=false).`;
}

// Chatbox's model test goes on, after the "Hi", with a vision and a tool-use probe of fixed content.
export const CHATBOX_VISION_PROBE = { text: 'What color is in this image?', image: 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==' };
export const CHATBOX_TOOL_PROBE = { text: 'What is the weather in San Francisco?', tool: 'get_weather', description: 'Get the weather' };
export const CHATBOX_PROBE_REPLY =
  "This is MotiveProxy: this is Chatbox's model test, so the proxy answered it itself and forwarded nothing. To talk to the other side of this session, just chat (or turn this off with ANSWER_BACKGROUND_TASKS=false).";

// big-AGI reads these two fields of its follow-up tools; a rating of 1 means "not useful, skip".
export const NOTHING_TO_DO_ARGUMENTS: Readonly<Record<string, unknown>> = { rating_short_reason: 'not needed', rating_number: 1 };
