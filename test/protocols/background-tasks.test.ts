import { describe, it, expect } from 'vitest';
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
    const body = { metadata: { task: 'function_calling' } };
    expect(detectBackgroundTask([{ role: 'user', content: 'hello' }], body)).toBeNull();
  });
});
