// Recognises the requests that chat UIs send to "the model" on their own (chat titles, tags,
// follow-up suggestions, summaries, connection tests, ...) so the proxy can answer them itself
// instead of handing them to the paired human/agent (PROTOCOL.md §2). The markers and the
// answer each UI parses are in background-markers.ts; docs/chat-uis.md lists them for users.

import {
  CHATBOX_PROBE_REPLY,
  CHATBOX_TOOL_PROBE,
  CHATBOX_VISION_PROBE,
  GENERIC_TITLE_REQUEST,
  GREETING_TESTS,
  LOBECHAT_CHECK_MAX_TOKENS,
  JSON_KEYS,
  MARKERS,
  NOTHING_TO_DO_ARGUMENTS,
  ONLY_THE_TITLE_SIGN,
  OPEN_WEBUI_TASKS,
  SCHEMA_NAMES,
  TRANSCRIPT_SIGN,
  greetingTestReply,
  type Answer,
  type BackgroundTaskKind,
  type Marker,
  type TitleRules,
} from './background-markers.js';

export type { BackgroundTaskKind } from './background-markers.js';

/** A chat message as the adapters normalise it: role and its text (string content or concatenated text parts). */
export interface ChatText { role: string; content: string }
/** A function call the proxy answers with, for a request that forces one (its arguments are JSON text). */
export interface ToolCall { readonly name: string; readonly arguments: string }
export interface BackgroundTask {
  kind: BackgroundTaskKind;
  /** the assistant text the proxy answers with, in the format the UI parses */
  reply: string;
  /** for a request that forces a function call (tool_choice), the call to answer with instead of text */
  toolCall?: ToolCall;
}

type Body = Record<string, unknown> | undefined;
type JsonSchema = Record<string, unknown>;
interface Tool { readonly name: string; readonly parameters?: JsonSchema }
/** What an answer is built from: the request's messages, its body, and the text the marker was found in. */
interface Request { readonly messages: readonly ChatText[]; readonly body: Body; readonly text: string }

const NEUTRAL_TITLE = 'Conversation';
const HISTORY_BLOCK = /<chat_history>([\s\S]*)<\/chat_history>/;
const SYSTEM_ROLES = ['system', 'developer'];

/** Recognises a chat UI's background request from its messages and raw body; null for ordinary chat. */
export function detectBackgroundTask(messages: readonly ChatText[], body?: Record<string, unknown>): BackgroundTask | null {
  const task = connectionTest(messages, body) ?? recognise(messages, body);
  if (!task) return null;
  const forced = forcedTool(body);
  return forced ? answerWithCall(task, forced) : task;
}

function recognise(messages: readonly ChatText[], body: Body): BackgroundTask | null {
  // Every known UI puts its task in the final message or in the leading system prompt.
  const last = messages[messages.length - 1];
  if (!last || !['user', ...SYSTEM_ROLES].includes(last.role)) return null;
  const lastText = last.content.trim();
  const systemText = messages.find((m) => SYSTEM_ROLES.includes(m.role))?.content.trim();
  const at = (text: string): Request => ({ messages, body, text });

  const schemaTask = structuredOutputTask(at(lastText));
  if (schemaTask) return schemaTask;

  // Answers are built from the last message, which holds the conversation (or the input) either way.
  const marker = MARKERS.find((m) => isMarked(m, lastText, systemText));
  if (marker) return { kind: marker.kind, reply: answer(marker.answer, at(lastText)) };

  const task = metadataTask(body);
  if (task) return { kind: task.kind, reply: answer(task.answer, at(lastText)) };

  const title = [lastText, systemText].find((t) => t !== undefined && isGenericTitleRequest(t));
  if (title !== undefined) return { kind: 'title', reply: answer({ type: 'title', format: 'plain' }, at(lastText)) };

  return customisedOpenWebUiTemplate(at(lastText));
}

function isMarked(marker: Marker, lastText: string, systemText: string | undefined): boolean {
  if (marker.place !== 'system' && marker.start.test(lastText)) return true;
  return marker.place !== 'last' && systemText !== undefined && marker.start.test(systemText);
}

// --- connection tests ---

/**
 * A lone "Hi" (SillyTavern's Test Message, Chatbox's basic test) or "hello" (LobeChat's Check),
 * and Chatbox's vision and tool probes. A person whose whole first message is exactly one of
 * these words, with no system prompt and no tools, gets the same explanatory answer.
 */
function connectionTest(messages: readonly ChatText[], body: Body): BackgroundTask | null {
  const only = messages.length === 1 ? messages[0] : undefined;
  if (!only || only.role !== 'user') return null;
  const text = only.content.trim();
  const tools = toolsOf(body);
  const greeting = GREETING_TESTS.find((g) => g.text === text && (!g.needsLobeChatCap || hasLobeChatCap(body)));
  if (!hasTools(body) && greeting) return { kind: 'connection_test', reply: greetingTestReply(text) };
  if (isChatboxProbe(text, tools, body)) return { kind: 'connection_test', reply: CHATBOX_PROBE_REPLY };
  return null;
}

const hasLobeChatCap = (body: Body): boolean =>
  body?.['max_tokens'] === LOBECHAT_CHECK_MAX_TOKENS || body?.['max_completion_tokens'] === LOBECHAT_CHECK_MAX_TOKENS;

function isChatboxProbe(text: string, tools: readonly Tool[], body: Body): boolean {
  if (text === CHATBOX_VISION_PROBE.text) return tools.length === 0 && JSON.stringify(body?.['messages'] ?? '').includes(CHATBOX_VISION_PROBE.image);
  if (text !== CHATBOX_TOOL_PROBE.text || tools.length !== 1) return false;
  const raw = (Array.isArray(body?.['tools']) ? body['tools'][0] : undefined) as Record<string, unknown> | undefined;
  const fn = (raw?.['function'] ?? raw) as Record<string, unknown> | undefined;
  return tools[0]!.name === CHATBOX_TOOL_PROBE.tool && fn?.['description'] === CHATBOX_TOOL_PROBE.description;
}

// --- other ways of recognising a task ---

/** LobeChat's structured output names its schema; the answer is that schema's JSON. */
function structuredOutputTask(request: Request): BackgroundTask | null {
  const format = responseFormat(request.body);
  const known = format ? own(SCHEMA_NAMES, format.name) : undefined;
  if (!format || !known) return null;
  const value = { ...(neutralValue(format.schema) as Record<string, unknown>) };
  if (known.title) value['title'] = conversationTitle(request, known.title);
  return { kind: known.kind, reply: JSON.stringify(value) };
}

/** Chat Completions `response_format.json_schema`, or the Responses API's `text.format`. */
function responseFormat(body: Body): { name: string; schema: JsonSchema } | null {
  const chat = record(record(body?.['response_format'])?.['json_schema']);
  const responses = record(record(body?.['text'])?.['format']);
  const format = chat ?? (responses?.['type'] === 'json_schema' ? responses : undefined);
  const name = format?.['name'];
  return typeof name === 'string' ? { name, schema: record(format?.['schema']) ?? {} } : null;
}

function metadataTask(body: Body): { kind: BackgroundTaskKind; answer: Answer } | null {
  const task = record(body?.['metadata'])?.['task'];
  return typeof task === 'string' ? (own(OPEN_WEBUI_TASKS, task) ?? null) : null;
}

function isGenericTitleRequest(text: string): boolean {
  return GENERIC_TITLE_REQUEST.test(text) && (TRANSCRIPT_SIGN.test(text) || ONLY_THE_TITLE_SIGN.test(text));
}

/** An admin-edited Open WebUI template: its <chat_history> block, "JSON", and the key the parser reads. */
function customisedOpenWebUiTemplate(request: Request): BackgroundTask | null {
  const { text } = request;
  if (!HISTORY_BLOCK.test(text)) return null;
  const instruction = text.replace(HISTORY_BLOCK, '');
  if (!/\bJSON\b/i.test(instruction)) return null;
  const generic = JSON_KEYS.find(({ key }) => key.test(instruction));
  return generic ? { kind: generic.kind, reply: answer(generic.answer, request) } : null;
}

// --- answers ---

// Empty lists and empty texts make the UIs show nothing; titles reuse the user's own words,
// which is what the UIs fall back to anyway when a title request fails.
function answer(spec: Answer, request: Request): string {
  switch (spec.type) {
    case 'text':
      return spec.text;
    case 'json':
      return JSON.stringify(spec.value);
    case 'title': {
      const title = conversationTitle(request, spec.rules);
      if (spec.format === 'plain') return title;
      return JSON.stringify(spec.format === 'structured' ? { language: 'English', title } : { title });
    }
    case 'image_prompt': {
      // The image is drawn by Open WebUI's image engine, so pass the user's own request through.
      const turns = historyTurns(request.text).filter((t) => t.role === 'USER');
      const prompt = turns[turns.length - 1]?.text.trim();
      return JSON.stringify({ prompt: prompt || 'A simple illustration' });
    }
    case 'tool_arguments': {
      const tools = toolsOf(request.body);
      return JSON.stringify(tools.length === 1 ? nothingToDo(tools[0]!.parameters) : NOTHING_TO_DO_ARGUMENTS);
    }
  }
}

// --- titles ---

const USER_LINE = /^[ \t]*(?:[-*][ \t]*)?(?:\|\|>)?(?:user|you|human):[ \t]*(?:\n[ \t]*)?([^\n]*)/im;
const USER_TAG = /<user>\s*([\s\S]*?)\s*<\/user>/;
const QUOTED_MESSAGE = /(?:Give the title only\.|Here is the message:)\s*"([\s\S]*)"\s*$/;
const FENCED_BLOCK = /```[^\n]*\n([\s\S]*?)```/;
const OPEN_WEBUI_PROMPT = /\nPrompt:\s*([\s\S]*)$/;

function conversationTitle(request: Request, rules: TitleRules = {}): string {
  const limit = rules.charLimitInPrompt?.exec(request.text);
  const fromPrompt = limit ? Number(limit[1] ?? limit[2]) : undefined;
  return shortTitle(firstUserText(request), { ...rules, ...(fromPrompt ? { maxChars: fromPrompt } : {}) });
}

/** The first thing the user said in the conversation being titled, in whichever shape the UI renders it. */
function firstUserText({ text, messages }: Request): string | undefined {
  return (
    historyTurns(text).find((t) => t.role === 'USER')?.text ??
    USER_LINE.exec(text)?.[1] ??
    USER_TAG.exec(text)?.[1] ??
    QUOTED_MESSAGE.exec(text)?.[1] ??
    FENCED_BLOCK.exec(text)?.[1] ??
    OPEN_WEBUI_PROMPT.exec(text)?.[1] ??
    // UIs that send the conversation itself before the task (a generic title prompt last).
    messages.slice(0, -1).find((m) => m.role === 'user')?.content
  );
}

/** Turns of Open WebUI's <chat_history> block, rendered one "ROLE: text" per message. */
function historyTurns(text: string): { role: string; text: string }[] {
  const block = HISTORY_BLOCK.exec(text)?.[1];
  if (block === undefined) return [];
  const turns: { role: string; text: string }[] = [];
  for (const line of block.split('\n')) {
    const head = /^(USER|ASSISTANT|SYSTEM|TOOL):[ \t]?(.*)$/.exec(line);
    const current = turns[turns.length - 1];
    if (head) turns.push({ role: head[1] ?? '', text: head[2] ?? '' });
    else if (current) current.text += `\n${line}`;
  }
  return turns;
}

/** First non-empty line, stripped of quotes/markdown, at most six words and the UI's limits. */
function shortTitle(raw: string | undefined, rules: TitleRules): string {
  const line = (raw ?? '').split('\n').map((l) => l.trim()).find((l) => l.length > 0) ?? '';
  let cleaned = line.replace(/^[\s"'`>#*\-]+|[\s"'`]+$/g, '');
  if (rules.noPunctuation) cleaned = cleaned.replace(/[^\p{L}\p{N}\s]/gu, '');
  const words = cleaned.split(/\s+/).filter((w) => w.length > 0).slice(0, rules.maxWords ?? 6);
  const title = withinChars(words, rules.maxChars ?? 60) || NEUTRAL_TITLE;
  return rules.lowercase ? title.toLowerCase() : title;
}

/** As many whole words as fit in `max` characters (a single longer word is cut). */
function withinChars(words: readonly string[], max: number): string {
  let title = '';
  for (const word of words) {
    const next = title ? `${title} ${word}` : word;
    if (next.length > max) break;
    title = next;
  }
  return title || (words[0] ?? '').slice(0, max);
}

// --- forced function calls ---

/** The one function a request forces the model to call: named in tool_choice, or "required" with one tool. */
function forcedTool(body: Body): Tool | null {
  const choice = body?.['tool_choice'];
  const tools = toolsOf(body);
  if (choice === 'required') return tools.length === 1 ? tools[0]! : null;
  // OpenAI's forms only (Chat {type:'function', function:{name}}, Responses {type:'function', name}):
  // the other protocols render the proxy's reply as text, which `reply` already is.
  const named = record(choice);
  const name = named?.['type'] === 'function' ? (record(named['function'])?.['name'] ?? named['name']) : undefined;
  if (typeof name !== 'string') return null;
  return tools.find((t) => t.name === name) ?? { name };
}

/**
 * The task's answer as a call of the forced function: "nothing to do" arguments for its schema,
 * with whatever the task's own JSON answer says (a title, say) where the schema has that field.
 */
function answerWithCall(task: BackgroundTask, tool: Tool): BackgroundTask {
  const args = nothingToDo(tool.parameters);
  const own = parseObject(task.reply);
  const fields = record(tool.parameters?.['properties']);
  for (const [key, value] of Object.entries(own ?? {})) if (!fields || key in fields) args[key] = value;
  const text = JSON.stringify(args);
  return { ...task, reply: text, toolCall: { name: tool.name, arguments: text } };
}

/** The smallest object a function's JSON schema accepts: its required fields with neutral values. */
function nothingToDo(schema: JsonSchema | undefined): Record<string, unknown> {
  const value = neutralValue(schema ?? { type: 'object' });
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : {};
}

function neutralValue(schema: JsonSchema, field?: string): unknown {
  if (field !== undefined && field in NOTHING_TO_DO_ARGUMENTS) return NOTHING_TO_DO_ARGUMENTS[field];
  if (Array.isArray(schema['enum']) && schema['enum'].length > 0) return schema['enum'][0];
  if ('const' in schema) return schema['const'];
  const option = [schema['anyOf'], schema['oneOf']].find(Array.isArray)?.[0];
  if (record(option)) return neutralValue(record(option)!, field);
  const declared = Array.isArray(schema['type']) ? schema['type'].find((t) => t !== 'null') : schema['type'];
  const type = declared ?? (schema['properties'] ? 'object' : 'string');
  switch (type) {
    case 'object': {
      const properties = record(schema['properties']) ?? {};
      const required = Array.isArray(schema['required']) ? (schema['required'] as unknown[]).filter((k) => typeof k === 'string') : [];
      return Object.fromEntries(required.map((key) => [key, neutralValue(record(properties[key]) ?? {}, key)]));
    }
    case 'array':
      return [];
    case 'integer':
    case 'number':
      return typeof schema['minimum'] === 'number' ? schema['minimum'] : 0;
    case 'boolean':
      return false;
    case 'null':
      return null;
    default:
      return '';
  }
}

function hasTools(body: Body): boolean {
  const tools = body?.['tools'];
  return Array.isArray(tools) && tools.length > 0;
}

/** The request's function tools, in the Chat Completions, Responses, Anthropic or Gemini shape. */
function toolsOf(body: Body): Tool[] {
  const tools = body?.['tools'];
  if (!Array.isArray(tools)) return [];
  const declarations = tools.flatMap((raw) => {
    const gemini = record(raw)?.['functionDeclarations'] ?? record(raw)?.['function_declarations'];
    return Array.isArray(gemini) ? gemini : [raw];
  });
  return declarations.flatMap((raw) => {
    const tool = record(raw);
    const fn = record(tool?.['function']) ?? tool;
    const name = fn?.['name'];
    const parameters = record(fn?.['parameters']) ?? record(fn?.['input_schema']);
    return typeof name === 'string' ? [{ name, ...(parameters ? { parameters } : {}) }] : [];
  });
}

/** A table entry by a name from the request, never an inherited one ("constructor"). */
function own<T>(table: Readonly<Record<string, T>>, name: string): T | undefined {
  return Object.hasOwn(table, name) ? table[name] : undefined;
}

function record(value: unknown): Record<string, unknown> | undefined {
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
}

function parseObject(text: string): Record<string, unknown> | undefined {
  try {
    return record(JSON.parse(text));
  } catch {
    return undefined;
  }
}
