/**
 * Private mail servers for the email bridge tests, on free loopback ports with a temp directory of
 * their own, never the machine's own mail setup or /etc/dovecot:
 *
 * - Debian's dovecot as the IMAP server, run in the foreground from a config file written here, in
 *   a process group of its own so that it can be stopped (and started again on the same port and
 *   data, for reconnect tests) with everything it forked;
 * - an SMTP server (the smtp-server package) that takes mail for the same users and delivers it
 *   straight into their Maildirs, the way a local delivery agent does, so that a message sent over
 *   SMTP shows up over IMAP, IDLE included, like on a real mail host.
 *
 * Every user's password is MAIL_PASSWORD; dovecot's user names are the full addresses.
 * `npm test` installs dovecot when missing (scripts/ensure-mail.sh).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  chownSync,
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { connect } from 'node:net';
import { hostname, tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { ImapFlow } from 'imapflow';
import { simpleParser, type AddressObject, type Headers } from 'mailparser';
import nodemailer, { type SendMailOptions } from 'nodemailer';
import { SMTPServer } from 'smtp-server';
import { freePort } from './net.js';

export const MAIL_PASSWORD = 'secret';
export const DEFAULT_MAIL_USERS: readonly string[] = ['bridge@game.test', 'player@example.test', 'stranger@elsewhere.test'];
const HOST = '127.0.0.1';

/** One message the SMTP server accepted, as it came in. */
export interface SentMail {
  /** MAIL FROM ('' for the null sender) and the accepted RCPT TO addresses, as the client wrote them. */
  envelope: { from: string; to: string[] };
  /** The message as received (before the Return-Path/Delivered-To lines added on delivery). */
  raw: string;
  /** The user the client authenticated as, null for an unauthenticated send. */
  authUser: string | null;
}

/** A message read back over IMAP and parsed with mailparser, flattened for assertions. */
export interface InboxMail {
  uid: number;
  flags: string[];
  messageId: string | undefined;
  inReplyTo: string | undefined;
  /** Always a list, whether the message had zero, one or several references. */
  references: string[];
  subject: string | undefined;
  /** The first From address. */
  from: string | undefined;
  /** Every To address. */
  to: string[];
  text: string | undefined;
  html: string | undefined;
  /** mailparser's parsed headers, keyed by lower-case name. */
  headers: Headers;
  raw: string;
}

export interface MailSystem {
  readonly imap: { readonly host: string; readonly port: number };
  readonly smtp: { readonly host: string; readonly port: number };
  readonly users: readonly string[];
  /** Every message the SMTP server accepted, oldest first. */
  readonly sent: SentMail[];
  /** `imap://<user>:secret@127.0.0.1:<port>/INBOX`, the user URL-encoded. */
  imapUrl(user: string): string;
  /** `smtp://<user>:secret@127.0.0.1:<port>`, the user URL-encoded. */
  smtpUrl(user: string): string;
  /**
   * Sends through the SMTP server, unauthenticated, and resolves with the Message-ID. With `raw`
   * (a string or Buffer) and neither `envelope` nor from/to, the envelope comes from the raw
   * message's From and To/Cc/Bcc. Rejects if any recipient was refused.
   */
  send(message: SendMailOptions): Promise<string>;
  /** Every message in the user's INBOX, oldest first, read without marking anything seen. */
  inbox(user: string): Promise<InboxMail[]>;
  /** Polls `inbox(user)` until a message matches; rejects after timeoutMs (10 s by default). */
  waitForMail(user: string, predicate?: (mail: InboxMail) => boolean, timeoutMs?: number): Promise<InboxMail>;
  /** Stops dovecot and starts it again on the same port and data; SMTP delivery goes on meanwhile. */
  restartImap(): Promise<void>;
  /** Stops dovecot (its whole process group) and closes the SMTP server. */
  stop(): Promise<void>;
  /** stop(), then removes the temp directory. */
  destroy(): Promise<void>;
}

const dovecotBin = existsSync('/usr/sbin/dovecot') ? '/usr/sbin/dovecot' : 'dovecot';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** uid and gid of a system user, or null when there is no such user. */
function systemUser(name: string): { uid: number; gid: number } | null {
  const found = spawnSync('getent', ['passwd', name], { encoding: 'utf8' });
  const fields = found.status === 0 ? found.stdout.trim().split(':') : [];
  if (fields.length < 4) return null;
  return { uid: Number(fields[2]), gid: Number(fields[3]) };
}

/** Name of a group by gid, or null when there is no such group. */
function groupName(gid: number): string | null {
  const found = spawnSync('getent', ['group', String(gid)], { encoding: 'utf8' });
  return found.status === 0 ? (found.stdout.split(':')[0] ?? null) : null;
}

interface Accounts {
  internalUser: string;
  /** The internal user's primary group: Debian's `nobody` is in `nogroup`, so the names differ. */
  internalGroup: string;
  loginUser: string;
  /** Owner of the Maildirs, the uid dovecot's imap processes run as. */
  mail: { uid: number; gid: number };
}

/**
 * Which system users dovecot's processes run as. Nothing is created: only users that exist are named.
 * As root, Debian's package provides `dovecot` (auth, stats, ...) and `dovenull` (the login
 * processes). Without `dovecot`, root will do: dovecot accepts root as its internal user. Root is
 * not possible for the other two: imap-login refuses to run as root ("must not be run as root")
 * and the imap process refuses a userdb uid of 0, so those fall back to the unprivileged users
 * every Debian system has (`nobody`; `mail`, the conventional owner of local mail, for mail
 * access). Not as root, dovecot cannot switch users, so everything is the current user.
 */
function accounts(): Accounts {
  if (process.getuid?.() !== 0) {
    const name = userInfo().username;
    const gid = process.getgid!();
    return { internalUser: name, internalGroup: groupName(gid) ?? String(gid), loginUser: name, mail: { uid: process.getuid!(), gid } };
  }
  const nobody = systemUser('nobody');
  const need = (what: string, user: { uid: number; gid: number } | null): { uid: number; gid: number } => {
    if (!user) throw new Error(`mail-servers: no system user for dovecot's ${what} (tried the Debian defaults and nobody)`);
    return user;
  };
  const loginUser = systemUser('dovenull') ? 'dovenull' : (need('login processes', nobody), 'nobody');
  const internalUser = systemUser('dovecot') ? 'dovecot' : 'root';
  return {
    internalUser,
    internalGroup: groupName(systemUser(internalUser)!.gid) ?? 'root',
    loginUser,
    mail: need('mail processes', systemUser('mail') ?? nobody),
  };
}

/** [major, minor] of the installed dovecot, which decides the config syntax (2.4 renamed most settings). */
function dovecotVersion(): [number, number] {
  const out = spawnSync(dovecotBin, ['--version'], { encoding: 'utf8' });
  if (out.error || out.status !== 0) {
    throw new Error(`mail-servers: cannot run ${dovecotBin} (${out.error?.message ?? out.stderr}); run scripts/ensure-mail.sh`);
  }
  const match = /^(\d+)\.(\d+)/.exec(out.stdout.trim());
  return match ? [Number(match[1]), Number(match[2])] : [2, 3];
}

interface DovecotPaths {
  dir: string;
  passwd: string;
  mailRoot: string;
  log: string;
}

function dovecotConfig(version: [number, number], paths: DovecotPaths, port: number, who: Accounts): string {
  const v24 = version[0] > 2 || (version[0] === 2 && version[1] >= 4);
  // Not as root, the login and anvil processes cannot chroot into base_dir as they do by default.
  const chroot = process.getuid?.() === 0 ? [] : ['  chroot ='];
  const common = [
    'protocols = imap',
    // `listen` rather than a per-listener address: the latter is spelled differently in 2.3 and 2.4.
    `listen = ${HOST}`,
    `base_dir = ${paths.dir}/run`,
    `state_dir = ${paths.dir}/state`,
    `log_path = ${paths.log}`,
    'ssl = no',
    'auth_mechanisms = plain login',
    `default_internal_user = ${who.internalUser}`,
    `default_internal_group = ${who.internalGroup}`,
    `default_login_user = ${who.loginUser}`,
    // The mail uid is below the default of 500 when it is Debian's `mail` user.
    `first_valid_uid = ${who.mail.uid}`,
    `first_valid_gid = ${who.mail.gid}`,
    // IDLE learns of new mail through inotify (dovecot batches for about half a second); this poll
    // is only the fallback for file systems without inotify, where the default would be 30 s.
    'mailbox_idle_check_interval = 1 secs',
    'namespace inbox {',
    '  inbox = yes',
    '}',
    'service imap-login {',
    ...chroot,
    '  inet_listener imap {',
    `    port = ${port}`,
    '  }',
    '  inet_listener imaps {',
    '    port = 0',
    '  }',
    '}',
    ...(chroot.length ? ['service anvil {', ...chroot, '}'] : []),
  ];
  if (v24) {
    // Written to the 2.4 documentation (Debian 13); Debian 12 ships 2.3, the branch below.
    return [
      'dovecot_config_version = 2.4.0',
      'dovecot_storage_version = 2.4.0',
      ...common,
      'auth_allow_cleartext = yes',
      'mail_driver = maildir',
      'mail_path = ~/Maildir',
      'passdb passwd-file {',
      `  passwd_file_path = ${paths.passwd}`,
      '}',
      'userdb static {',
      '  fields {',
      `    uid = ${who.mail.uid}`,
      `    gid = ${who.mail.gid}`,
      `    home = ${paths.mailRoot}/%{user}`,
      '  }',
      '}',
      '',
    ].join('\n');
  }
  return [
    ...common,
    'disable_plaintext_auth = no',
    'mail_location = maildir:~/Maildir',
    'passdb {',
    '  driver = passwd-file',
    `  args = scheme=PLAIN username_format=%u ${paths.passwd}`,
    '}',
    'userdb {',
    '  driver = static',
    `  args = uid=${who.mail.uid} gid=${who.mail.gid} home=${paths.mailRoot}/%u`,
    '}',
    '',
  ].join('\n');
}

/** Last `bytes` of a file, or '' when it does not exist (yet). */
function tail(path: string, bytes = 4000): string {
  try {
    const size = statSync(path).size;
    const fd = openSync(path, 'r');
    try {
      const length = Math.min(size, bytes);
      const buffer = Buffer.alloc(length);
      readSync(fd, buffer, 0, length, size - length);
      return buffer.toString('utf8');
    } finally {
      closeSync(fd);
    }
  } catch {
    return '';
  }
}

/** The first line a server sends on connect, or null if it does not connect or say anything within a second. */
function greeting(port: number): Promise<string | null> {
  return new Promise((resolve) => {
    let data = '';
    const socket = connect(port, HOST);
    const done = (value: string | null): void => {
      socket.destroy();
      resolve(value);
    };
    socket.setTimeout(1000, () => done(null));
    socket.once('error', () => done(null));
    socket.on('data', (chunk: Buffer) => {
      data += chunk.toString('latin1');
      if (data.includes('\n')) done(data.split(/\r?\n/)[0]!);
    });
    socket.once('end', () => done(data || null));
  });
}

function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, HOST);
    socket.setTimeout(500, () => (socket.destroy(), resolve(false)));
    socket.once('error', () => resolve(false));
    socket.once('connect', () => (socket.destroy(), resolve(true)));
  });
}

/**
 * Whether a live process is left in the process group `pgid`. Zombies do not count: once the
 * master is gone its children are reaped by init, which in a container may never happen.
 */
function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
  } catch {
    return false;
  }
  let pids: string[];
  try {
    pids = readdirSync('/proc').filter((name) => /^\d+$/.test(name));
  } catch {
    return true;
  }
  return pids.some((pid) => {
    try {
      // After the command name in parentheses: state, ppid, pgrp, ...
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const [state, , pgrp] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      return Number(pgrp) === pgid && state !== 'Z';
    } catch {
      return false;
    }
  });
}

/** A Maildir file name unique per the Maildir spec: time, then random/usec/pid/count parts, then the host. */
let deliveries = 0;
const maildirHost = hostname().replace(/\//g, '\\057').replace(/:/g, '\\072');
function maildirName(): string {
  const now = Date.now();
  const usec = (now % 1000) * 1000 + Math.floor(Math.random() * 1000);
  deliveries += 1;
  return `${Math.floor(now / 1000)}.R${randomBytes(6).toString('hex')}M${usec}P${process.pid}Q${deliveries}.${maildirHost}`;
}

function addresses(field: AddressObject | AddressObject[] | undefined): string[] {
  if (!field) return [];
  return (Array.isArray(field) ? field : [field]).flatMap((group) => group.value).flatMap(function flat(entry): string[] {
    // Group syntax (`team: a@x, b@y;`) nests its members.
    if (entry.group) return entry.group.flatMap(flat);
    return entry.address ? [entry.address] : [];
  });
}

function smtpError(message: string, responseCode: number): Error & { responseCode: number } {
  return Object.assign(new Error(message), { responseCode });
}

export async function startMailSystem(options: { users?: string[] } = {}): Promise<MailSystem> {
  const users = [...(options.users ?? DEFAULT_MAIL_USERS)];
  // SMTP addresses are matched case-insensitively, and delivered to the user as configured.
  const userByAddress = new Map(users.map((user) => [user.toLowerCase(), user]));
  const version = dovecotVersion();
  const who = accounts();
  const asRoot = process.getuid?.() === 0;

  const dir = mkdtempSync(join(tmpdir(), 'motive-mail-'));
  if (/[\s%]/.test(dir)) throw new Error(`mail-servers: the temp directory ${dir} cannot go into a dovecot config (space or %)`);
  const paths: DovecotPaths = { dir, passwd: join(dir, 'passwd'), mailRoot: join(dir, 'mail'), log: join(dir, 'dovecot.log') };
  // dovecot's processes run as other users than root: they need to reach their files below the temp dir.
  chmodSync(dir, 0o755);
  // Read by the auth process (the internal user); the passwords are the well-known test password.
  writeFileSync(paths.passwd, users.map((user) => `${user}:{PLAIN}${MAIL_PASSWORD}\n`).join(''), { mode: 0o644 });
  mkdirSync(paths.mailRoot, { mode: 0o755 });
  const own = (path: string): void => {
    if (asRoot) chownSync(path, who.mail.uid, who.mail.gid);
  };
  // Created up front rather than at first IMAP login, since mail may be delivered before anyone logs in.
  for (const user of users) {
    const home = join(paths.mailRoot, user);
    for (const path of [home, join(home, 'Maildir'), ...['cur', 'new', 'tmp'].map((sub) => join(home, 'Maildir', sub))]) {
      mkdirSync(path, { mode: 0o700 });
      own(path);
    }
  }

  const imapPort = await freePort();
  const configPath = join(dir, 'dovecot.conf');
  writeFileSync(configPath, dovecotConfig(version, paths, imapPort, who), { mode: 0o644 });

  let dovecot: ChildProcess | null = null;
  const startDovecot = async (): Promise<void> => {
    let output = '';
    let spawnError: Error | null = null;
    const child = spawn(dovecotBin, ['-F', '-c', configPath], { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    dovecot = child;
    child.once('error', (error) => (spawnError = error));
    child.stdout!.on('data', (c: Buffer) => (output = (output + c.toString()).slice(-4000)));
    child.stderr!.on('data', (c: Buffer) => (output = (output + c.toString()).slice(-4000)));
    const failure = (what: string): Error =>
      new Error(`mail-servers: dovecot ${what}\n--- output ---\n${output}\n--- ${paths.log} ---\n${tail(paths.log)}`);
    const deadline = Date.now() + 15_000;
    for (;;) {
      if (spawnError) throw failure(`could not be started: ${(spawnError as Error).message}`);
      if (child.exitCode !== null || child.signalCode !== null) throw failure(`exited (${child.exitCode ?? child.signalCode})`);
      // A connection alone is not enough: the port may be someone else's, and dovecot is only ready once it greets.
      const line = await greeting(imapPort);
      if (line?.startsWith('* OK')) return;
      if (Date.now() > deadline) {
        await stopDovecot();
        throw failure(`did not greet on ${HOST}:${imapPort} (got ${JSON.stringify(line)})`);
      }
      await sleep(100);
    }
  };
  const stopDovecot = async (): Promise<void> => {
    const child = dovecot;
    dovecot = null;
    if (!child?.pid) return;
    const pgid = child.pid;
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      try {
        process.kill(-pgid, 'SIGTERM');
      } catch {
        // Already gone.
      }
      await Promise.race([exited, sleep(10_000)]);
    }
    // The master stops its children on SIGTERM; anything still in the group (a stuck child, or
    // everything if the master did not exit in time) is killed.
    const deadline = Date.now() + 5_000;
    while (groupAlive(pgid)) {
      try {
        process.kill(-pgid, 'SIGKILL');
      } catch {
        break;
      }
      if (Date.now() > deadline) throw new Error(`mail-servers: dovecot's process group ${pgid} does not end`);
      await sleep(50);
    }
    while (await listening(imapPort)) {
      if (Date.now() > deadline) throw new Error(`mail-servers: something still listens on ${imapPort} after dovecot stopped`);
      await sleep(50);
    }
  };

  const sent: SentMail[] = [];
  const deliver = (user: string, from: string, raw: Buffer): void => {
    const maildir = join(paths.mailRoot, user, 'Maildir');
    const name = maildirName();
    const temporary = join(maildir, 'tmp', name);
    // As a local delivery agent does: the envelope goes into the message as the top lines.
    const trace = Buffer.from(`Return-Path: <${from}>\r\nDelivered-To: ${user}\r\n`);
    writeFileSync(temporary, Buffer.concat([trace, raw]), { mode: 0o600 });
    own(temporary);
    // Written in tmp/ and renamed into new/, so that dovecot never sees half a message.
    renameSync(temporary, join(maildir, 'new', name));
  };

  const smtpServer = new SMTPServer({
    name: 'mail.test',
    banner: 'private test mail server',
    logger: false,
    authOptional: true,
    // There is no TLS on loopback: AUTH has to be allowed in the clear.
    allowInsecureAuth: true,
    authMethods: ['PLAIN', 'LOGIN'],
    disabledCommands: ['STARTTLS'],
    // Unauthenticated senders (authOptional) may send many messages over one connection.
    maxAllowedUnauthenticatedCommands: false,
    // A client left connected (a bridge under test) must not hold up stop() for the default 30 s.
    closeTimeout: 1000,
    onAuth(auth, _session, callback) {
      const user = auth.username === undefined ? undefined : userByAddress.get(auth.username.toLowerCase());
      if (user && auth.password === MAIL_PASSWORD) return callback(null, { user });
      callback(smtpError('Invalid username or password', 535));
    },
    onRcptTo(address, _session, callback) {
      if (userByAddress.has(address.address.toLowerCase())) return callback();
      callback(smtpError(`<${address.address}>: no such user here`, 550));
    },
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (chunk: Buffer) => chunks.push(chunk));
      stream.once('error', (error: Error) => callback(error));
      stream.once('end', () => {
        try {
          const raw = Buffer.concat(chunks);
          const from = session.envelope.mailFrom ? session.envelope.mailFrom.address : '';
          const to = session.envelope.rcptTo.map((rcpt) => rcpt.address);
          for (const user of new Set(to.map((address) => userByAddress.get(address.toLowerCase())!))) deliver(user, from, raw);
          sent.push({ envelope: { from, to }, raw: raw.toString('utf8'), authUser: typeof session.user === 'string' ? session.user : null });
          callback();
        } catch (error) {
          callback(smtpError(`local delivery failed: ${(error as Error).message}`, 451));
        }
      });
    },
  });
  smtpServer.on('error', () => {
    // Client-side connection errors are reported here; the sending side sees them anyway.
  });

  const cleanupAfterFailure = async (): Promise<void> => {
    await stopDovecot().catch(() => undefined);
    await new Promise<void>((resolve) => smtpServer.close(() => resolve()));
    rmSync(dir, { recursive: true, force: true });
  };

  let smtpPort: number;
  try {
    await startDovecot();
    // Port 0: the kernel picks a free port while binding, so no other process can take it in between.
    smtpPort = await new Promise<number>((resolve, reject) => {
      const server = smtpServer.server;
      server.once('error', reject);
      smtpServer.listen(0, HOST, () => {
        server.off('error', reject);
        resolve((server.address() as { port: number }).port);
      });
    });
  } catch (error) {
    await cleanupAfterFailure();
    throw error;
  }

  const imapClient = (user: string): ImapFlow => {
    const client = new ImapFlow({ host: HOST, port: imapPort, secure: false, auth: { user, pass: MAIL_PASSWORD }, logger: false });
    // Without a listener a dropped connection would be an uncaught 'error' event; the failing call reports it.
    client.on('error', () => undefined);
    return client;
  };

  const inbox = async (user: string): Promise<InboxMail[]> => {
    const client = imapClient(user);
    await client.connect();
    try {
      // EXAMINE, not SELECT: reading must not change the mailbox, the bridge under test owns it.
      const lock = await client.getMailboxLock('INBOX', { readOnly: true });
      try {
        if (!client.mailbox || client.mailbox.exists === 0) return [];
        const fetched = await client.fetchAll('1:*', { uid: true, flags: true, source: true });
        return await Promise.all(
          fetched.map(async (message): Promise<InboxMail> => {
            const raw = message.source ?? Buffer.alloc(0);
            const parsed = await simpleParser(raw);
            const references = parsed.references;
            return {
              uid: message.uid,
              flags: [...(message.flags ?? [])],
              messageId: parsed.messageId,
              inReplyTo: parsed.inReplyTo,
              references: references === undefined ? [] : Array.isArray(references) ? references : [references],
              subject: parsed.subject,
              from: addresses(parsed.from)[0],
              to: addresses(parsed.to),
              text: parsed.text,
              html: parsed.html === false ? undefined : parsed.html,
              headers: parsed.headers,
              raw: raw.toString('utf8'),
            };
          }),
        );
      } finally {
        lock.release();
      }
    } finally {
      await client.logout().catch(() => client.close());
    }
  };

  const send = async (message: SendMailOptions): Promise<string> => {
    const transport = nodemailer.createTransport({ host: HOST, port: smtpPort, secure: false, ignoreTLS: true });
    try {
      let mail = message;
      let rawMessageId: string | undefined;
      if (typeof message.raw === 'string' || Buffer.isBuffer(message.raw)) {
        // nodemailer does not look into a raw message: its envelope and Message-ID come from the headers here.
        const parsed = await simpleParser(message.raw);
        rawMessageId = parsed.messageId ?? '';
        if (!message.envelope && !message.from && !message.to && !message.cc && !message.bcc) {
          mail = {
            ...message,
            envelope: { from: addresses(parsed.from)[0] ?? '', to: [...addresses(parsed.to), ...addresses(parsed.cc), ...addresses(parsed.bcc)] },
          };
        }
      }
      const info = await transport.sendMail(mail);
      if (info.rejected.length > 0) throw new Error(`mail-servers: recipients refused: ${info.rejected.join(', ')} (${info.response})`);
      return rawMessageId ?? info.messageId;
    } finally {
      transport.close();
    }
  };

  const waitForMail = async (user: string, predicate: (mail: InboxMail) => boolean = () => true, timeoutMs = 10_000): Promise<InboxMail> => {
    const deadline = Date.now() + timeoutMs;
    let seen: InboxMail[] = [];
    let lastError: unknown = null;
    for (;;) {
      try {
        // Errors are retried: the IMAP server may be restarting in a reconnect test.
        seen = await inbox(user);
        lastError = null;
        const match = seen.find(predicate);
        if (match) return match;
      } catch (error) {
        lastError = error;
      }
      if (Date.now() > deadline) {
        const subjects = seen.map((mail) => JSON.stringify(mail.subject)).join(', ') || 'none';
        const why = lastError ? `; last error: ${(lastError as Error).message}` : '';
        throw new Error(`mail-servers: no matching mail for ${user} within ${timeoutMs} ms (subjects: ${subjects})${why}`);
      }
      await sleep(200);
    }
  };

  let smtpClosed: Promise<void> | null = null;
  const stop = async (): Promise<void> => {
    smtpClosed ??= new Promise<void>((resolve) => smtpServer.close(() => resolve()));
    await Promise.all([stopDovecot(), smtpClosed]);
  };

  const encoded = (user: string): string => encodeURIComponent(user);
  return {
    imap: { host: HOST, port: imapPort },
    smtp: { host: HOST, port: smtpPort },
    users,
    sent,
    imapUrl: (user) => `imap://${encoded(user)}:${MAIL_PASSWORD}@${HOST}:${imapPort}/INBOX`,
    smtpUrl: (user) => `smtp://${encoded(user)}:${MAIL_PASSWORD}@${HOST}:${smtpPort}`,
    send,
    inbox,
    waitForMail,
    restartImap: async () => {
      await stopDovecot();
      await startDovecot();
    },
    stop,
    destroy: async () => {
      try {
        await stop();
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
}

