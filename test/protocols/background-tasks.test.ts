import { readdirSync, readFileSync } from 'node:fs';
import { describe, it, expect } from 'vitest';
import { textOfParts } from '../../src/protocols/adapter.js';
import { detectBackgroundTask, type ChatText } from '../../src/protocols/background-tasks.js';

// Template texts below are the UIs' shipped defaults (Open WebUI backend/open_webui/config.py;
// LibreChat / @librechat/agents title prompts), rendered the way each UI renders them.

const HISTORY = 'USER: How do I bake sourdough bread at home without a proofing basket?\nASSISTANT: Start with an active starter...';

function owui(template: string, history = HISTORY): ChatText[] {
  return [{ role: 'user', content: template.replace(/\{\{MESSAGES:END:\d+\}\}/, history) }];
}

/** Open WebUI slices from the first "{" to the last "}" and json.loads it. */
function owuiJson(reply: string): Record<string, unknown> {
  return JSON.parse(reply.slice(reply.indexOf('{'), reply.lastIndexOf('}') + 1)) as Record<string, unknown>;
}

const TITLE_CURRENT = `### Task:
Generate a concise title summarizing the chat history.
### Guidelines:
- The title should clearly represent the main theme or subject of the conversation.
- Keep it short: 2-4 words is best.
- Do not use emojis, quotation marks, or special formatting.
### Output:
JSON format: { "title": "your concise title here" }
### Examples:
- { "title": "Stock Trends" },
- { "title": "Chocolate Chip Cookies" }
### Chat History:
<chat_history>
{{MESSAGES:END:2}}
</chat_history>`;

const TITLE_V05 = `### Task:
Generate a concise, 3-5 word title with an emoji summarizing the chat history.
### Guidelines:
- The title should clearly represent the main theme or subject of the conversation.
- Use emojis that enhance understanding of the topic, but avoid quotation marks or special formatting.
### Output:
JSON format: { "title": "your concise title here" }
### Examples:
- { "title": "📉 Stock Market Trends" },
- { "title": "🍪 Perfect Chocolate Chip Recipe" }
### Chat History:
<chat_history>
{{MESSAGES:END:2}}
</chat_history>`;

const TITLE_LEGACY = `Create a concise, 3-5 word title with an emoji as a title for the chat history, in the given language. Suitable Emojis for the summary can be used to enhance understanding but avoid quotation marks or special formatting. RESPOND ONLY WITH THE TITLE TEXT.

Examples of titles:
📉 Stock Market Trends
🍪 Perfect Chocolate Chip Recipe

<chat_history>
{{MESSAGES:END:2}}
</chat_history>`;

const TAGS = `### Task:
Generate 1-3 broad tags categorizing the main themes of the chat history, along with 1-3 more specific subtopic tags.

### Guidelines:
- Start with high-level domains (e.g. Science, Technology, Philosophy, Arts, Politics, Business, Health, Sports, Entertainment, Education)
- If content is too short (less than 3 messages) or too diverse, use only ["General"]

### Output:
JSON format: { "tags": ["tag1", "tag2", "tag3"] }

### Chat History:
<chat_history>
{{MESSAGES:END:6}}
</chat_history>`;

const FOLLOW_UPS = `### Task:
Suggest 3-5 relevant follow-up questions or prompts that the user might naturally ask next in this conversation as a **user**, based on the chat history, to help continue or deepen the discussion.
### Guidelines:
- Write all follow-up questions from the user’s point of view, directed to the assistant.
- Response must be a JSON object with a "follow_ups" key containing an array of strings, no extra text or formatting.
### Output:
JSON format: { "follow_ups": ["Question 1?", "Question 2?", "Question 3?"] }
### Chat History:
<chat_history>
{{MESSAGES:END:6}}
</chat_history>`;

const QUERIES = `### Task:
Analyze the chat history to determine the necessity of generating search queries, in the given language. By default, **prioritize generating 1-3 broad and relevant search queries** unless it is absolutely certain that no additional information is required. If no search is unequivocally needed, return an empty list.

### Guidelines:
- Respond **EXCLUSIVELY** with a JSON object. Any form of extra commentary, explanation, or additional text is strictly prohibited.
- If and only if it is entirely certain that no useful results can be retrieved by a search, return: { "queries": [] }.
- Today's date is: 2025-06-01.

### Output:
Strictly return in JSON format: 
{
  "queries": ["query1", "query2"]
}

### Chat History:
<chat_history>
{{MESSAGES:END:6}}
</chat_history>
`;

const QUERIES_V04 = `### Task:
Based on the chat history, determine whether a search is necessary, and if so, generate a 1-3 broad search queries to retrieve comprehensive and updated information. If no search is required, return an empty list.

### Guidelines:
- Respond exclusively with a JSON object.
- If no search query is necessary, output should be: { "queries": [] }

### Output:
JSON format: {
  "queries": ["query1", "query2"]
}

### Chat History:
<chat_history>
{{MESSAGES:END:6}}
</chat_history>
`;

const AUTOCOMPLETE = `### Task:
You are an autocompletion system. Continue the text in \`<text>\` based on the **completion type** in \`<type>\` and the given language.  

### **Output Rules**:
- Respond only in JSON format: \`{ "text": "<your_completion>" }\`.

---
### Context:
<chat_history>
{{MESSAGES:END:6}}
</chat_history>
<type>search query</type>  
<text>best sourdough</text>  
#### Output:
`;

const EMOJI = `Your task is to reflect the speaker's likely facial expression through a fitting emoji. Interpret emotions from the message and reflect their facial expression using fitting, diverse emojis (e.g., 😊, 😢, 😡, 😱).

Message: \`\`\`That is wonderful news, thank you!\`\`\``;

const IMAGE_PROMPT = `### Task:
Generate a detailed prompt for am image generation task based on the given language and context. Describe the image as if you were explaining it to someone who cannot see it.

### Output:
Strictly return in JSON format:
{
    "prompt": "Your detailed description here."
}

### Chat History:
<chat_history>
{{MESSAGES:END:6}}
</chat_history>`;

describe('detectBackgroundTask: Open WebUI', () => {
  it('answers the current title template with a JSON title from the first user line', () => {
    const task = detectBackgroundTask(owui(TITLE_CURRENT));
    expect(task?.kind).toBe('title');
    const title = owuiJson(task!.reply)['title'];
    expect(title).toBe('How do I bake sourdough bread');
  });

  it('matches the 0.5-era emoji title template too, even behind a model system prompt', () => {
    const messages: ChatText[] = [{ role: 'system', content: 'You are a pirate.' }, ...owui(TITLE_V05)];
    const task = detectBackgroundTask(messages);
    expect(task?.kind).toBe('title');
    expect(typeof owuiJson(task!.reply)['title']).toBe('string');
  });

  it('answers the legacy plain-text title template with bare text', () => {
    const task = detectBackgroundTask(owui(TITLE_LEGACY));
    expect(task?.kind).toBe('title');
    expect(task!.reply).toBe('How do I bake sourdough bread');
  });

  it('falls back to a neutral title when there is no user line', () => {
    const task = detectBackgroundTask(owui(TITLE_CURRENT, ''));
    expect(owuiJson(task!.reply)['title']).toBe('Conversation');
  });

  it('answers tags with an empty list', () => {
    const task = detectBackgroundTask(owui(TAGS));
    expect(task?.kind).toBe('tags');
    expect(owuiJson(task!.reply)['tags']).toEqual([]);
  });

  it('answers follow-ups with an empty list', () => {
    const task = detectBackgroundTask(owui(FOLLOW_UPS));
    expect(task?.kind).toBe('follow_ups');
    expect(owuiJson(task!.reply)['follow_ups']).toEqual([]);
  });

  it('answers both query-generation wordings with no queries', () => {
    for (const template of [QUERIES, QUERIES_V04]) {
      const task = detectBackgroundTask(owui(template));
      expect(task?.kind).toBe('queries');
      expect(owuiJson(task!.reply)['queries']).toEqual([]);
    }
  });

  it('answers autocomplete with an empty completion', () => {
    const task = detectBackgroundTask(owui(AUTOCOMPLETE));
    expect(task?.kind).toBe('autocomplete');
    expect(owuiJson(task!.reply)['text']).toBe('');
  });

  it('answers emoji with one pictographic character', () => {
    const task = detectBackgroundTask([{ role: 'user', content: EMOJI }]);
    expect(task?.kind).toBe('emoji');
    // The frontend strips quotes and takes the first Extended_Pictographic match.
    expect(task!.reply.replace(/["']/g, '').match(/\p{Extended_Pictographic}/gu)?.[0]).toBeTruthy();
  });

  it('answers image prompts with the user request as the prompt', () => {
    const history = 'USER: Draw me a cat\nASSISTANT: Sure.\nUSER: Make it a red fox in the snow\nat dusk';
    const task = detectBackgroundTask(owui(IMAGE_PROMPT, history));
    expect(task?.kind).toBe('image_prompt');
    expect(owuiJson(task!.reply)['prompt']).toBe('Make it a red fox in the snow\nat dusk');
  });

  it('uses metadata.task when a client forwards it, even for a custom template', () => {
    const messages: ChatText[] = [{ role: 'user', content: 'Name this chat:\nUSER: hi' }];
    const task = detectBackgroundTask(messages, { model: 'm', metadata: { task: 'tags_generation' } });
    expect(task?.kind).toBe('tags');
    expect(owuiJson(task!.reply)['tags']).toEqual([]);
  });

  it('recognises an admin-customised template by its chat history block and JSON key', () => {
    const custom = 'Summarise the topics of this chat as JSON {"tags": [...]}.\n<chat_history>\nUSER: hi\n</chat_history>';
    expect(detectBackgroundTask([{ role: 'user', content: custom }])?.kind).toBe('tags');
  });
});

describe('detectBackgroundTask: LibreChat', () => {
  const convo = 'User: What is the capital of Australia?\nAI: The capital of Australia is Canberra.';

  it('answers the agents completion title prompt (both wordings) with bare text', () => {
    const prompts = [
      `Provide a concise, 5-word-or-less title for the conversation, using title case conventions. Only return the title itself.\n\nConversation:\n${convo}`,
      `Provide a concise, 5-word-or-less title for the conversation, using its same language, with no punctuation. Apply title case conventions appropriate for the language. Never directly mention the language name or the word "title" and only return the title itself.\n\nConversation:\n${convo}`,
    ];
    for (const content of prompts) {
      const task = detectBackgroundTask([{ role: 'user', content }]);
      expect(task?.kind).toBe('librechat_title');
      expect(task!.reply).toBe('What is the capital of Australia?');
    }
  });

  it('answers the structured title prompt with { language, title }', () => {
    const content = `Analyze this conversation and provide:\n1. The detected language of the conversation\n2. A concise title in the detected language (5 words or less, no punctuation or quotation)\n\n${convo}`;
    const task = detectBackgroundTask([{ role: 'user', content }]);
    expect(task?.kind).toBe('librechat_title');
    const parsed = JSON.parse(task!.reply) as { language: string; title: string };
    expect(parsed.title).toBe('What is the capital of Australia?');
    expect(typeof parsed.language).toBe('string');
  });

  it('answers the legacy OpenAIClient system-role title prompt', () => {
    const content = `Please generate a concise, 5-word-or-less title for the conversation, using its same language, with no punctuation. Apply title case conventions appropriate for the language. Never directly mention the language name or the word "title".\n\n||>User:\n"Plan a weekend trip to Kyoto"\n||>Response:\n"\\"Here is a plan...\\""\n\n||>Title:`;
    const task = detectBackgroundTask([{ role: 'system', content }]);
    expect(task?.kind).toBe('librechat_title');
    expect(task!.reply).toBe('Plan a weekend trip to Kyoto');
  });

  it('answers the assistants-endpoint title prompt', () => {
    const content = 'Please generate a concise title (max 40 characters) for a conversation that starts with:\nUser: Help me fix my bike chain\nAssistant: Sure, first...\n\nTitle:';
    const task = detectBackgroundTask([{ role: 'user', content }]);
    expect(task?.kind).toBe('librechat_title');
    expect(task!.reply).toBe('Help me fix my bike chain');
  });
});

describe('detectBackgroundTask: ordinary chat', () => {
  const cases: [string, ChatText[]][] = [
    ['a plain question', [{ role: 'user', content: 'How do I bake sourdough bread?' }]],
    ['a user asking for a title', [{ role: 'user', content: 'Give me a concise title for my essay about climate change.' }]],
    ['a user asking for a 5-word title', [{ role: 'user', content: 'Please provide a concise, five word title for the conversation we just had.' }]],
    ['tags mentioned in conversation', [{ role: 'user', content: 'Generate 1-3 broad tags for my blog post and return JSON like { "tags": ["a"] }' }]],
    ['a user writing in the task style', [{ role: 'user', content: '### Task:\nWrite a haiku about autumn.' }]],
    ['a quoted template earlier in the chat', [
      { role: 'user', content: owui(TAGS)[0]!.content },
      { role: 'assistant', content: 'That looks like an Open WebUI prompt.' },
      { role: 'user', content: 'Right, what does it do?' },
    ]],
    ['an assistant turn last', [{ role: 'user', content: 'hi' }, { role: 'assistant', content: owui(TITLE_CURRENT)[0]!.content }]],
    ['an empty request', []],
  ];
  for (const [name, messages] of cases) {
    it(`returns null for ${name}`, () => {
      expect(detectBackgroundTask(messages)).toBeNull();
    });
  }

  it('ignores metadata.task values that are not background tasks', () => {
    // This used a lone "hello", which is now LobeChat's connection check (answered whatever the
    // metadata says); the point of the test is the metadata, so it uses an ordinary question.
    const body = { metadata: { task: 'function_calling' } };
    expect(detectBackgroundTask([{ role: 'user', content: "What's the weather in Lisbon?" }], body)).toBeNull();
  });
});

// Every request the chat UIs send on their own, as collected from their source: one fixture per
// request or wording (test/fixtures/chat-ui-requests/*.json). Each says whether the proxy answers
// it (`proxy_answers`), as what (`expected_kind`), with what (`expected_reply`) and why (`decision`).
interface Fixture {
  ui: string;
  purpose: string;
  body: { messages: { role: string; content: string | { type: string; text?: unknown }[] }[] } & Record<string, unknown>;
  proxy_answers: boolean;
  expected_kind: string | null;
  expected_reply?: { format: 'text' | 'json' | 'tool_call'; text?: string; contains?: string; json?: unknown; tool?: string };
  decision: string;
}

const FIXTURES = new URL('../fixtures/chat-ui-requests/', import.meta.url);
const fixtures = readdirSync(FIXTURES)
  .filter((file) => file.endsWith('.json'))
  .sort()
  .map((file) => [file, JSON.parse(readFileSync(new URL(file, FIXTURES), 'utf8')) as Fixture] as const);

/** The request as the OpenAI Chat adapter hands it to the detector. */
function detectFixture(fixture: Fixture) {
  const texts: ChatText[] = fixture.body.messages.map((m) => ({ role: m.role, content: textOfParts(m.content) }));
  return detectBackgroundTask(texts, fixture.body);
}

describe('detectBackgroundTask: chat UI fixtures', () => {
  it('has fixtures, each with a decision', () => {
    expect(fixtures.length).toBeGreaterThanOrEqual(28);
    for (const [, fixture] of fixtures) {
      expect(typeof fixture.proxy_answers).toBe('boolean');
      expect(fixture.decision.length).toBeGreaterThan(0);
    }
  });

  for (const [file, fixture] of fixtures) {
    if (!fixture.proxy_answers) {
      it(`forwards ${file} (${fixture.ui}: ${fixture.purpose})`, () => {
        expect(fixture.expected_kind).toBeNull();
        expect(detectFixture(fixture)).toBeNull();
      });
      continue;
    }
    it(`answers ${file} (${fixture.ui}: ${fixture.purpose}) as ${fixture.expected_kind}`, () => {
      const task = detectFixture(fixture);
      expect(task?.kind).toBe(fixture.expected_kind);
      const expected = fixture.expected_reply!;
      switch (expected.format) {
        case 'text':
          if (expected.text !== undefined) expect(task!.reply).toBe(expected.text);
          if (expected.contains !== undefined) expect(task!.reply).toContain(expected.contains);
          expect(task!.toolCall).toBeUndefined();
          break;
        case 'json':
          expect(JSON.parse(task!.reply)).toEqual(expected.json);
          expect(task!.toolCall).toBeUndefined();
          break;
        case 'tool_call':
          expect(task!.toolCall?.name).toBe(expected.tool);
          expect(JSON.parse(task!.toolCall!.arguments)).toEqual(expected.json);
          // Protocols that cannot send a call send the same JSON as text.
          expect(task!.reply).toBe(task!.toolCall!.arguments);
          break;
      }
    });
  }
});

describe('detectBackgroundTask: connection tests', () => {
  const lone = (content: string): ChatText[] => [{ role: 'user', content }];

  it('answers a lone "Hi", and a lone "hello" sent with LobeChat\'s token cap, trimmed, with an explanation a person can read', () => {
    for (const [word, body] of [['Hi', undefined], ['  Hi\n', undefined], ['hello', { max_tokens: 256 }], ['hello', { max_completion_tokens: 256 }]] as const) {
      const task = detectBackgroundTask(lone(word), body);
      expect(task?.kind).toBe('connection_test');
      expect(task!.reply).toContain('MotiveProxy');
      expect(task!.reply).toContain('ANSWER_BACKGROUND_TASKS=false');
    }
  });

  it('takes a lone "hello" without LobeChat\'s token cap for a person or an agent opening a conversation', () => {
    expect(detectBackgroundTask(lone('hello'))).toBeNull();
    expect(detectBackgroundTask(lone('hello'), { stream: true })).toBeNull();
    // The Anthropic Messages API requires a cap: an SDK call always has one.
    expect(detectBackgroundTask(lone('hello'), { max_tokens: 1024 })).toBeNull();
    expect(detectBackgroundTask(lone('hello'), { max_completion_tokens: 4096 })).toBeNull();
  });

  const ordinary: [string, ChatText[], Record<string, unknown>?][] = [
    ['"Hi there!"', lone('Hi there!')],
    ['"hi"', lone('hi')],
    ['"Hello"', lone('Hello')],
    ['"Hi!"', lone('Hi!')],
    ['"HELLO"', lone('HELLO')],
    ['a lone "Hi" with a system prompt', [{ role: 'system', content: 'You are a pirate.' }, { role: 'user', content: 'Hi' }]],
    ['a lone "hello" with a developer prompt', [{ role: 'developer', content: 'Be brief.' }, { role: 'user', content: 'hello' }]],
    ['a lone "Hi" with tools', lone('Hi'), { tools: [{ type: 'function', function: { name: 'lookup', parameters: { type: 'object' } } }] }],
    ['a "Hi" from the assistant', [{ role: 'assistant', content: 'Hi' }]],
    // A real SillyTavern turn always carries its prompt manager's scaffold and the greeting.
    ['a real SillyTavern chat turn', [
      { role: 'system', content: "Write Seraphina's next reply in a fictional chat between Seraphina and User." },
      { role: 'system', content: 'Seraphina is a gentle forest guardian who heals travellers.' },
      { role: 'system', content: '[Start a new Chat]' },
      { role: 'assistant', content: '*You wake in a glade.* Easy now, you were hurt. I am Seraphina.' },
      { role: 'user', content: 'Hi' },
    ]],
    ['"Hi" later in a conversation', [{ role: 'user', content: 'hello?' }, { role: 'assistant', content: 'Welcome.' }, { role: 'user', content: 'Hi' }]],
    ["Chatbox's vision text without its image", lone('What color is in this image?')],
    ["Chatbox's tool text without its tool", lone('What is the weather in San Francisco?')],
  ];
  for (const [name, messages, body] of ordinary) {
    it(`does not take ${name} for a connection test`, () => {
      expect(detectBackgroundTask(messages, body)).toBeNull();
    });
  }
});

describe('detectBackgroundTask: generic title prompts', () => {
  const convo = 'User: How do I bake sourdough bread at home?\nAssistant: Start with an active starter.';

  it('answers a short-title prompt that carries a transcript', () => {
    const task = detectBackgroundTask([{ role: 'user', content: `Generate a short title for this chat:\n\n${convo}` }]);
    expect(task?.kind).toBe('title');
    expect(task!.reply).toBe('How do I bake sourdough bread');
  });

  it('answers a short-title prompt that asks for only the title, titling the conversation sent before it', () => {
    const messages: ChatText[] = [
      { role: 'user', content: 'Plan a weekend trip to Kyoto' },
      { role: 'assistant', content: 'Day one: Fushimi Inari at dawn...' },
      { role: 'user', content: "Generate a short title for this chat using the user's request. Return only the title, max 6 words." },
    ];
    const task = detectBackgroundTask(messages);
    expect(task?.kind).toBe('title');
    expect(task!.reply).toBe('Plan a weekend trip to Kyoto');
  });

  it('answers one in a fenced block, or as the system prompt', () => {
    const fenced = 'Create a concise title for the following conversation. Respond with the title and nothing else.\n```\nWhy is the sky blue?\n```';
    expect(detectBackgroundTask([{ role: 'user', content: fenced }])?.reply).toBe('Why is the sky blue?');
    const asSystem: ChatText[] = [
      { role: 'system', content: 'Write a brief title for this conversation. Only return the title.' },
      { role: 'user', content: 'Tips for growing tomatoes on a balcony' },
    ];
    expect(detectBackgroundTask(asSystem)?.kind).toBe('title');
  });

  const people: [string, string][] = [
    ['an essay title', 'Give me a concise title for my essay about climate change.'],
    ['a blog post title', 'Write a short title for my blog post about sourdough, please'],
    ['a title request that does not open the message', 'Could you generate a short title for this chat? Only return the title.'],
    ['a question about titles', 'What makes a good short title for a novel? Give examples, nothing else matters.'],
    ['a summary request', 'Summarize our conversation so far in a few bullet points.'],
    ['a story summary', 'Please give me a brief summary of the story so far.'],
    ['a title with a transcript but no title request', 'User: what title should my book have?\nAssistant: Tell me about it.'],
  ];
  for (const [name, content] of people) {
    it(`does not answer ${name}`, () => {
      expect(detectBackgroundTask([{ role: 'user', content }])).toBeNull();
    });
  }
});

describe('detectBackgroundTask: markers in the first system message', () => {
  it('recognises a LobeChat title whose system prompt came as a developer message or a joined Anthropic system', () => {
    const fixture = fixtures.find(([file]) => file === 'lobechat-title-plain.json')![1];
    const [system, user] = fixture.body.messages.map((m) => textOfParts(m.content));
    for (const role of ['developer', 'system']) {
      const task = detectBackgroundTask([{ role, content: `${system!}\n\n` }, { role: 'user', content: user! }]);
      expect(task?.kind).toBe('title');
    }
  });

  it('ignores a marker that is only a later, ordinary user message', () => {
    const messages: ChatText[] = [
      { role: 'user', content: 'You are a professional conversation summarizer. Generate a concise title that captures the essence of the conversation.' },
      { role: 'assistant', content: 'Ha, that sounds like a system prompt.' },
      { role: 'user', content: 'It is one. Anyway, how are you?' },
    ];
    expect(detectBackgroundTask(messages)).toBeNull();
  });

  it('uses a known response_format schema name even without the system prompt', () => {
    const body = {
      response_format: {
        type: 'json_schema',
        json_schema: { name: 'topic_title', schema: { type: 'object', properties: { title: { type: 'string' } }, required: ['title'] } },
      },
    };
    const task = detectBackgroundTask([{ role: 'user', content: '<conversation>\n<user>\nWhy is the sky blue?\n</user>\n</conversation>' }], body);
    expect(task?.kind).toBe('title');
    expect(JSON.parse(task!.reply)).toEqual({ title: 'Why is the sky blue' });
  });

  it('leaves an unknown schema name alone', () => {
    const body = { response_format: { type: 'json_schema', json_schema: { name: 'recipe', schema: { type: 'object' } } } };
    expect(detectBackgroundTask([{ role: 'user', content: 'Give me a sourdough recipe as JSON.' }], body)).toBeNull();
  });
});

describe('detectBackgroundTask: forced function calls', () => {
  const diagram = fixtures.find(([file]) => file === 'big-agi-auto-diagram.json')![1];
  const texts: ChatText[] = diagram.body.messages.map((m) => ({ role: m.role, content: textOfParts(m.content) }));
  const tool = (name: string, parameters: Record<string, unknown>) => ({ type: 'function', function: { name, parameters } });

  it('answers a function named in tool_choice with that call', () => {
    const body = { ...diagram.body, tool_choice: { type: 'function', function: { name: 'draw_plantuml_diagram' } } };
    const task = detectBackgroundTask(texts, body);
    expect(task?.toolCall?.name).toBe('draw_plantuml_diagram');
    expect(JSON.parse(task!.toolCall!.arguments)).toEqual({ rating_short_reason: 'not needed', rating_number: 1 });
  });

  it('does not force a call when tool_choice is "required" among several tools', () => {
    const body = { ...diagram.body, tools: [...(diagram.body['tools'] as unknown[]), tool('other', { type: 'object' })] };
    const task = detectBackgroundTask(texts, body);
    expect(task?.kind).toBe('diagram');
    expect(task!.toolCall).toBeUndefined();
  });

  it("puts a structured title into the forced call's arguments (LibreChat through LangChain's withStructuredOutput)", () => {
    const content = 'Analyze this conversation and provide:\n1. The detected language of the conversation\n2. A concise title in the detected language (5 words or less, no punctuation or quotation)\n\nUser: What is the capital of Australia?\nAI: Canberra.';
    const schema = { type: 'object', properties: { language: { type: 'string' }, title: { type: 'string' } }, required: ['language', 'title'] };
    const body = { tools: [tool('extract', schema)], tool_choice: { type: 'function', function: { name: 'extract' } } };
    const task = detectBackgroundTask([{ role: 'user', content }], body);
    expect(task?.kind).toBe('librechat_title');
    expect(task!.toolCall?.name).toBe('extract');
    expect(JSON.parse(task!.toolCall!.arguments)).toEqual({ language: 'English', title: 'What is the capital of Australia?' });
  });

  it('fills the required fields of any schema with neutral values', () => {
    const schema = {
      type: 'object',
      properties: {
        note: { type: 'string' },
        count: { type: 'integer' },
        score: { type: 'number', minimum: 1 },
        done: { type: 'boolean' },
        items: { type: 'array', items: { type: 'string' } },
        mode: { type: 'string', enum: ['skip', 'run'] },
        nested: { type: 'object', properties: { why: { type: ['string', 'null'] } }, required: ['why'] },
        optional: { type: 'string' },
      },
      required: ['note', 'count', 'score', 'done', 'items', 'mode', 'nested'],
    };
    const body = { tools: [tool('report', schema)], tool_choice: 'required' };
    const task = detectBackgroundTask(texts.slice(0, 1).concat({ role: 'user', content: 'Analyze the conversation and call draw_plantuml_diagram now.' }), body);
    expect(JSON.parse(task!.toolCall!.arguments)).toEqual({ note: '', count: 0, score: 1, done: false, items: [], mode: 'skip', nested: { why: '' } });
  });

  it('never answers an ordinary request just because it forces a call', () => {
    const body = { tools: [tool('lookup', { type: 'object' })], tool_choice: 'required' };
    expect(detectBackgroundTask([{ role: 'user', content: 'Look up the opening hours of the Louvre.' }], body)).toBeNull();
  });
});

describe('detectBackgroundTask: names from the request', () => {
  it('does not take inherited object keys for known schema names or Open WebUI tasks', () => {
    const messages: ChatText[] = [{ role: 'user', content: 'Tell me about the dragon.' }];
    expect(detectBackgroundTask(messages, { response_format: { type: 'json_schema', json_schema: { name: 'constructor', schema: {} } } })).toBeNull();
    expect(detectBackgroundTask(messages, { metadata: { task: 'toString' } })).toBeNull();
  });
});
