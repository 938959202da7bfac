/**
 * A decoder for OTLP/HTTP protobuf trace exports (ExportTraceServiceRequest), written from the
 * protobuf wire format and opentelemetry-proto's field numbers, independent of the SDK's
 * encoder: it yields the same shape as the OTLP/JSON encoding (ids in hex), so tests can read
 * either protocol alike.
 */
type Field = { no: number; wire: number; value: bigint | Buffer };

function fields(buf: Buffer): Field[] {
  const out: Field[] = [];
  let pos = 0;
  const varint = (): bigint => {
    let result = 0n;
    let shift = 0n;
    for (;;) {
      if (pos >= buf.length) throw new Error('truncated varint');
      const byte = buf[pos++]!;
      result |= BigInt(byte & 0x7f) << shift;
      if (!(byte & 0x80)) return result;
      shift += 7n;
    }
  };
  while (pos < buf.length) {
    const tag = Number(varint());
    const no = tag >>> 3;
    const wire = tag & 7;
    if (wire === 0) out.push({ no, wire, value: varint() });
    else if (wire === 1) out.push({ no, wire, value: buf.readBigUInt64LE((pos += 8) - 8) });
    else if (wire === 5) out.push({ no, wire, value: BigInt(buf.readUInt32LE((pos += 4) - 4)) });
    else if (wire === 2) {
      const len = Number(varint());
      if (pos + len > buf.length) throw new Error('truncated field');
      out.push({ no, wire, value: buf.subarray(pos, (pos += len)) });
    } else throw new Error(`unsupported wire type ${wire}`);
  }
  return out;
}

const bytesOf = (fs: Field[], no: number): Buffer[] => fs.filter((f) => f.no === no && f.value instanceof Buffer).map((f) => f.value as Buffer);
const first = (fs: Field[], no: number): Field | undefined => fs.find((f) => f.no === no);
const str = (fs: Field[], no: number): string | undefined => {
  const f = first(fs, no);
  return f?.value instanceof Buffer ? f.value.toString('utf8') : undefined;
};

export type AnyValue = {
  stringValue?: string;
  intValue?: string;
  boolValue?: boolean;
  doubleValue?: number;
  arrayValue?: { values: AnyValue[] };
  kvlistValue?: { values: Attr[] };
  bytesValue?: string;
};
export type Attr = { key: string; value: AnyValue };

function anyValue(buf: Buffer): AnyValue {
  const f = fields(buf)[0];
  if (!f) return {};
  if (f.no === 1 && f.value instanceof Buffer) return { stringValue: f.value.toString('utf8') };
  if (f.no === 2) return { boolValue: f.value !== 0n };
  if (f.no === 3) return { intValue: BigInt.asIntN(64, f.value as bigint).toString() };
  if (f.no === 4) return { doubleValue: Buffer.from(BigInt.asUintN(64, f.value as bigint).toString(16).padStart(16, '0'), 'hex').readDoubleBE() };
  if (f.no === 5 && f.value instanceof Buffer) return { arrayValue: { values: bytesOf(fields(f.value), 1).map(anyValue) } };
  if (f.no === 6 && f.value instanceof Buffer) return { kvlistValue: { values: attributes(fields(f.value), 1) } };
  if (f.no === 7 && f.value instanceof Buffer) return { bytesValue: f.value.toString('base64') };
  throw new Error(`unsupported AnyValue field ${f.no}`);
}

const attributes = (fs: Field[], no: number): Attr[] =>
  bytesOf(fs, no).map((kv) => {
    const k = fields(kv);
    const value = bytesOf(k, 2)[0];
    return { key: str(k, 1) ?? '', value: value ? anyValue(value) : {} };
  });

const hex = (fs: Field[], no: number): string | undefined => bytesOf(fs, no)[0]?.toString('hex');

export interface DecodedSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  attributes: Attr[];
  events: Array<{ name: string; attributes: Attr[] }>;
  links: Array<{ traceId: string; spanId: string; attributes: Attr[] }>;
}

export interface DecodedExport {
  resourceSpans: Array<{ resource: { attributes: Attr[] }; scopeSpans: Array<{ spans: DecodedSpan[] }> }>;
}

/** Decodes one `/v1/traces` body sent as `application/x-protobuf`. */
export function decodeTraceExport(body: Buffer): DecodedExport {
  return {
    resourceSpans: bytesOf(fields(body), 1).map((rsBuf) => {
      const rs = fields(rsBuf);
      const resource = bytesOf(rs, 1)[0];
      return {
        resource: { attributes: resource ? attributes(fields(resource), 1) : [] },
        scopeSpans: bytesOf(rs, 2).map((ssBuf) => ({
          spans: bytesOf(fields(ssBuf), 2).map((spanBuf): DecodedSpan => {
            const s = fields(spanBuf);
            const parent = hex(s, 4);
            return {
              traceId: hex(s, 1) ?? '',
              spanId: hex(s, 2) ?? '',
              ...(parent ? { parentSpanId: parent } : {}),
              name: str(s, 5) ?? '',
              kind: Number(first(s, 6)?.value ?? 0n),
              attributes: attributes(s, 9),
              events: bytesOf(s, 11).map((e) => {
                const ef = fields(e);
                return { name: str(ef, 2) ?? '', attributes: attributes(ef, 3) };
              }),
              links: bytesOf(s, 13).map((l) => {
                const lf = fields(l);
                return { traceId: hex(lf, 1) ?? '', spanId: hex(lf, 2) ?? '', attributes: attributes(lf, 4) };
              }),
            };
          }),
        })),
      };
    }),
  };
}
