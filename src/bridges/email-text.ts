/**
 * What a person wrote in a mail, without what their mail program added: the quoted message they
 * answer, the attribution line above it ("On … wrote:"), and their signature. And the reverse for
 * deliveries: plain text turned into simple HTML.
 *
 * Mail programs quote in a few well-known ways; each rule below is one of them. The cut is made
 * at the first line that starts a quote or a signature, so that what is kept is only what the
 * person typed above it (top-posting, as almost every program does). A reply written inline,
 * between quoted lines, keeps its own lines and drops the quoted ones.
 */

/** Lines that start the quoted original: everything from here on is not the person's. */
const QUOTE_HEADERS: readonly RegExp[] = [
  // Gmail, Apple Mail, Thunderbird: "On Tue, 3 Dec 2026 at 10:00, Alice <a@x> wrote:" (the line may wrap once)
  /^\s*On\b.{0,300}\bwrote:\s*$/i,
  // The same in a few languages clients ship with
  /^\s*(Le|Am|El|Il|Em|Op|Den|På)\b.{0,300}\b(a écrit|schrieb|escribió|ha scritto|escreveu|schreef|skrev)\b.{0,200}:\s*$/i,
  // Outlook and Exchange
  /^\s*-{2,}\s*Original Message\s*-{2,}\s*$/i,
  /^\s*_{10,}\s*$/,
  // Forwarded or quoted header blocks: "From: …" followed by Sent/Date/To lines
  /^\s*\*?From:\*?\s.+$/i,
];

/** A signature starts at "-- " (RFC 3676), or at a mobile client's stock line. */
const SIGNATURES: readonly RegExp[] = [/^-- ?$/, /^\s*Sent from my \w+/i, /^\s*Get Outlook for \w+/i, /^\s*Sent from (Mail|Yahoo Mail|Outlook) for \w+/i];

export function stripReply(text: string): string {
  const lines = text.replace(/\r\n?/g, '\n').split('\n');
  const kept: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (SIGNATURES.some((re) => re.test(line))) break;
    // An attribution line wrapped over two lines ("On …, Alice <a@x>\nwrote:")
    const joined = i + 1 < lines.length ? `${line} ${lines[i + 1]!.trim()}` : line;
    if (QUOTE_HEADERS.some((re) => re.test(line))) {
      // "From:" alone is not a quote header unless a Sent/Date/To/Subject line follows it.
      if (/^\s*\*?From:/i.test(line) && !/^\s*\*?(Sent|Date|To|Subject|Cc):/i.test(lines[i + 1] ?? '')) {
        kept.push(line);
        continue;
      }
      break;
    }
    if (/^\s*On\b/i.test(line) && /\bwrote:\s*$/i.test(joined) && QUOTE_HEADERS[0]!.test(joined)) break;
    // Quoted lines of an inline reply are dropped; the person's own lines between them stay.
    if (/^\s*>/.test(line)) continue;
    kept.push(line);
  }
  return kept.join('\n').replace(/\n{3,}/g, '\n\n').trim();
}

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

/** Plain text as simple HTML: paragraphs at blank lines, line breaks kept, everything escaped. */
export function textToHtml(text: string): string {
  const paragraphs = text
    .replace(/\r\n?/g, '\n')
    .split(/\n{2,}/)
    .map((p) => p.trim())
    .filter(Boolean)
    .map((p) => `<p>${p.replace(/[&<>"']/g, (c) => ESCAPES[c]!).replace(/\n/g, '<br>\n')}</p>`);
  return `<!doctype html>\n<html><body style="font-family: sans-serif; line-height: 1.4">\n${paragraphs.join('\n')}\n</body></html>\n`;
}
