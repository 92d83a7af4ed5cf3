import { compress, decompress, init } from "@bokuweb/zstd-wasm";
import { randomBytes } from "node:crypto";
await init();
const z = (b: Buffer) => Buffer.from(compress(b, 1));
const check = (tag: string) => { const f = z(randomBytes(300)); const g = z(Buffer.alloc(2000)); console.log(tag, f.subarray(0, 4).toString("hex"), g.subarray(0,4).toString("hex"), f.length, g.length); };
check("fresh");
const big = z(Buffer.from("a line of text\n".repeat(300000)));
decompress(big, { defaultHeapSize: 64 << 20 });
check("after big decompress");
// frame without content size: our own hand frame
try { decompress(Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x00, 0x09, 0, 0, 0x41]), { defaultHeapSize: 64 << 20 }); } catch (e) { console.log(String(e)); }
check("after unknown-size decompress");
for (let i = 0; i < 5; i++) { try { decompress(Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x00]), randomBytes(100)]), { defaultHeapSize: 64 << 20 }); } catch (e) { console.log(String(e)); } }
check("after garbage");
