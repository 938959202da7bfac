// Recognises the background requests that chat UIs send to "the model" on their own (chat titles,
// tags, follow-up suggestions, search queries, ...) so the proxy can answer them itself instead of
// handing them to the paired human/agent.
//
// Where the markers and reply formats come from (public repositories):
// - open-webui/open-webui backend/open_webui/config.py: DEFAULT_{TITLE,TAGS,FOLLOW_UP,QUERY,
//   AUTOCOMPLETE,EMOJI,IMAGE_PROMPT}_GENERATION_PROMPT_TEMPLATE (current and older wordings)
// - open-webui/open-webui backend/open_webui/routers/tasks.py (one user message plus metadata.task),
//   backend/open_webui/routers/openai.py (pops metadata before calling upstream),
//   backend/open_webui/utils/misc.py (chat history lines are "USER: ..." / "ASSISTANT: ...")
// - open-webui/open-webui backend/open_webui/utils/middleware.py, src/lib/apis/index.ts (reply parsing)
// - danny-avila/agents src/utils/title.ts, src/run.ts (LibreChat title prompts; "User: ...\nAI: ...")
// - danny-avila/LibreChat api/app/clients/prompts/titlePrompts.js, api/app/clients/OpenAIClient.js,
//   api/server/services/Endpoints/assistants/title.js (older LibreChat title prompts)

/** A chat message as the OpenAI adapter normalises it: role and its text (string content or concatenated text parts). */
export interface ChatText { role: string; content: string }
export type BackgroundTaskKind = 'title' | 'tags' | 'follow_ups' | 'queries' | 'autocomplete' | 'emoji' | 'image_prompt' | 'librechat_title';
export interface BackgroundTask { kind: BackgroundTaskKind; /** the assistant text the proxy answers with, in the format the UI parses */ reply: string }

/** How the UI reads the answer: JSON object (default), bare text, or LibreChat's structured {language,title}. */
type ReplyStyle = 'json' | 'plain' | 'structured';
interface Marker { kind: BackgroundTaskKind; style: ReplyStyle; start: RegExp }

const NEUTRAL_TITLE = 'Conversation';
const NEUTRAL_EMOJI = '🙂';
const TASK = String.raw`^###\s*Task:\s*`;

// Matched against the start of the request's last message. Each is the stable leading text of a
// default template, loose enough that older and newer wordings of the same template both match.
const MARKERS: readonly Marker[] = [
  // Open WebUI >= 0.5: "Generate a concise, 3-5 word title with an emoji summarizing ..." and
  // the newer "Generate a concise title summarizing the chat history." Both answer { "title": ... }.
  { kind: 'title', style: 'json', start: new RegExp(`${TASK}Generate a concise\\b[^\\n]*?\\btitle\\b[^\\n]*?summarizing the chat history`, 'i') },
  // Open WebUI <= 0.4 asked for bare text ("RESPOND ONLY WITH THE TITLE TEXT").
  { kind: 'title', style: 'plain', start: /^Create a concise, 3-5 word title with an emoji as a title for the (?:chat history|prompt)/i },
  { kind: 'tags', style: 'json', start: new RegExp(`${TASK}Generate 1-3 broad tags categorizing the main themes of the chat history`, 'i') },
  { kind: 'follow_ups', style: 'json', start: new RegExp(`${TASK}Suggest 3-5 relevant follow-up questions`, 'i') },
  {
    kind: 'queries', style: 'json',
    start: new RegExp(`${TASK}(?:Analyze the chat history to determine the necessity of generating search queries|Based on the chat history, determine whether a search is necessary)`, 'i'),
  },
  { kind: 'autocomplete', style: 'json', start: new RegExp(`${TASK}You are an autocompletion system\\.`, 'i') },
  { kind: 'emoji', style: 'plain', start: /^Your task is to reflect the speaker's likely facial expression through a fitting emoji/i },
  // The shipped template really says "for am image generation task".
  { kind: 'image_prompt', style: 'json', start: new RegExp(`${TASK}Generate a detailed prompt for a[mn]? image generation task`, 'i') },
  // LibreChat agents (default "completion" title method); older and newer wordings share this head.
  { kind: 'librechat_title', style: 'plain', start: /^Provide a concise, 5-word-or-less title for the conversation\b/i },
  // LibreChat agents "structured" title method (parsed as { language, title }).
  { kind: 'librechat_title', style: 'structured', start: /^Analyze this conversation and provide:\s*1\. The detected language of the conversation\s*2\. A concise title/i },
  // Older LibreChat OpenAIClient titleConvo ("Please generate " + titleInstruction ... "||>Title:").
  { kind: 'librechat_title', style: 'plain', start: /^Please generate a concise, 5-word-or-less title for the conversation\b/i },
  // LibreChat assistants endpoint title.js.
  { kind: 'librechat_title', style: 'plain', start: /^Please generate a concise title \(max 40 characters\) for a conversation that starts with:/i },
];

/** Open WebUI's TASKS values; only seen if a client forwards `metadata` (Open WebUI's own router strips it). */
const OPEN_WEBUI_TASKS: Readonly<Record<string, BackgroundTaskKind>> = {
  title_generation: 'title',
  tags_generation: 'tags',
  follow_up_generation: 'follow_ups',
  query_generation: 'queries',
  autocomplete_generation: 'autocomplete',
  emoji_generation: 'emoji',
  image_prompt_generation: 'image_prompt',
};

// Admin-customised Open WebUI templates keep the <chat_history> block and the JSON key the parser reads.
const JSON_KEYS: readonly [RegExp, BackgroundTaskKind][] = [
  [/"follow_ups"\s*:/, 'follow_ups'],
  [/"queries"\s*:/, 'queries'],
  [/"tags"\s*:/, 'tags'],
  [/"title"\s*:/, 'title'],
];
const HISTORY_BLOCK = /<chat_history>([\s\S]*)<\/chat_history>/;

/** Recognises a chat UI's background request from its messages (and optional raw body, for metadata fields); null for ordinary chat. */
export function detectBackgroundTask(messages: readonly ChatText[], body?: Record<string, unknown>): BackgroundTask | null {
  // Every known UI puts the task prompt in the final message (any system prompt comes before it).
  const last = messages[messages.length - 1];
  if (!last || !['user', 'system', 'developer'].includes(last.role)) return null;
  const text = last.content.trim();

  const marker = MARKERS.find((m) => m.start.test(text));
  if (marker) return { kind: marker.kind, reply: replyFor(marker.kind, marker.style, text) };

  const metaKind = metadataTask(body);
  if (metaKind) return { kind: metaKind, reply: replyFor(metaKind, 'json', text) };

  const history = HISTORY_BLOCK.exec(text);
  if (!history) return null;
  const instruction = text.replace(HISTORY_BLOCK, '');
  if (!/\bJSON\b/i.test(instruction)) return null;
  const generic = JSON_KEYS.find(([key]) => key.test(instruction));
  return generic ? { kind: generic[1], reply: replyFor(generic[1], 'json', text) } : null;
}

function metadataTask(body: Record<string, unknown> | undefined): BackgroundTaskKind | null {
  const metadata = body?.['metadata'];
  if (typeof metadata !== 'object' || metadata === null) return null;
  const task = (metadata as Record<string, unknown>)['task'];
  return typeof task === 'string' ? (OPEN_WEBUI_TASKS[task] ?? null) : null;
}

// Empty lists and an empty completion make the UI show nothing; titles reuse the user's own words,
// which is what both UIs fall back to anyway when a title request fails.
function replyFor(kind: BackgroundTaskKind, style: ReplyStyle, text: string): string {
  switch (kind) {
    case 'title': {
      const title = shortTitle(firstUserTurn(text) ?? /\nPrompt:\s*([\s\S]*)$/.exec(text)?.[1]);
      return style === 'plain' ? title : JSON.stringify({ title });
    }
    case 'tags':
      return JSON.stringify({ tags: [] });
    case 'follow_ups':
      return JSON.stringify({ follow_ups: [] });
    case 'queries':
      return JSON.stringify({ queries: [] });
    case 'autocomplete':
      return JSON.stringify({ text: '' });
    case 'emoji':
      return NEUTRAL_EMOJI;
    case 'image_prompt': {
      // The image is drawn by Open WebUI's image engine, so pass the user's own request through.
      const turns = historyTurns(text).filter((t) => t.role === 'USER');
      const request = turns[turns.length - 1]?.text.trim();
      return JSON.stringify({ prompt: request || 'A simple illustration' });
    }
    case 'librechat_title': {
      // Convo shapes: "User: x\nAI: y" (agents), '||>User:\n"x"' (OpenAIClient), "User: x\nAssistant: y".
      const user = /(?:^|\n)[ \t]*(?:\|\|>)?User:[ \t]*(?:\n[ \t]*)?([^\n]*)/.exec(text)?.[1];
      const title = shortTitle(user);
      return style === 'structured' ? JSON.stringify({ language: 'English', title }) : title;
    }
  }
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

function firstUserTurn(text: string): string | undefined {
  return historyTurns(text).find((t) => t.role === 'USER')?.text;
}

/** First non-empty line, stripped of quotes/markdown, at most six words. */
function shortTitle(raw: string | undefined): string {
  const line = (raw ?? '').split('\n').map((l) => l.trim()).find((l) => l.length > 0) ?? '';
  const cleaned = line.replace(/^[\s"'`>#*\-]+|[\s"'`]+$/g, '').replace(/\s+/g, ' ');
  const title = cleaned.split(' ').slice(0, 6).join(' ').slice(0, 60).trim();
  return title || NEUTRAL_TITLE;
}
