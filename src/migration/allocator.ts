/**
 * Keeps glibc's malloc from handing memory back to the kernel between frames.
 *
 * Every `cipher.update()` returns a fresh Buffer (node:crypto has no API that writes into
 * one of ours), i.e. one malloc per 64 KiB read and one free when the GC collects it. With
 * glibc's default thresholds (mmap above 128 KiB, trim of the heap top above 128 KiB) the
 * GC's batched frees trim the heap, and the next allocations fault their pages back in:
 * measured here, AES-256-GCM through node:crypto ran at 1.3–1.5 GB per CPU-second instead
 * of 3.1–3.3, half of the time in the kernel. Reproduce with any loop of
 * `cipher.update(buf64k)`, with and without `MALLOC_TRIM_THRESHOLD_=1073741824` in the
 * environment, comparing `process.resourceUsage().minorPageFault`.
 *
 * The environment variables must be set before the process starts, and they switch off
 * glibc's dynamic thresholds for everything else. Instead we let glibc adjust itself as it
 * is designed to: freeing an mmapped chunk larger than the current mmap threshold (up to
 * 32 MiB) raises that threshold to the chunk's size and the trim threshold to twice that.
 * One 31 MiB allocation, dropped at once, does it; the cost is that up to ~62 MiB of freed
 * heap may stay mapped in this process, which the next migration reuses. With another
 * allocator (musl, jemalloc) this is a harmless 31 MiB allocation.
 */
let primed = false;

export function primeAllocator(): void {
  if (primed) return;
  primed = true;
  // Written to, so that it is really backed by pages, then dropped; the next GC frees it.
  const big = Buffer.allocUnsafe(31 * 1024 * 1024);
  big[0] = 1;
}
