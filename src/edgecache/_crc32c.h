/* CRC-32C (Castagnoli) for the package's C extensions: the access log's batches (edge/_logcapture.c,
 * decision 0017) and the fill ring's records (store/_fillring.c, decision 0020's addendum crc32c).
 * SSE 4.2's crc32 instruction, 8 bytes an instruction, where the CPU has it (zlib's table-driven
 * CRC-32 took ~4 instructions a byte: a fifth of a hit's budget in the log, half a ring append);
 * else tables, 8 bytes a step (another architecture, or a CPU without it). Static, so each module
 * that includes it has its own copy and its own `crc_init` call at import. */
#ifndef EDGECACHE_CRC32C_H
#define EDGECACHE_CRC32C_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

static uint32_t crc_table[8][256];

/* The CRC-32C of `n` bytes at `p` by tables alone, continuing `crc` (0 to start). */
static uint32_t crc_tables(uint32_t crc, const unsigned char *p, size_t n) {
    uint32_t c = ~crc;
    while (n >= 8) {
        uint32_t lo = c ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
        c = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^ crc_table[5][(lo >> 16) & 0xff] ^
            crc_table[4][lo >> 24] ^ crc_table[3][p[4]] ^ crc_table[2][p[5]] ^ crc_table[1][p[6]] ^
            crc_table[0][p[7]];
        p += 8;
        n -= 8;
    }
    while (n--)
        c = crc_table[0][(c ^ *p++) & 0xff] ^ (c >> 8);
    return ~c;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc_sse42(uint32_t crc, const unsigned char *p,
                                                            size_t n) {
    uint64_t c = ~crc;
    while (n >= 8) {
        uint64_t word; /* memcpy: an unaligned load, which the instruction takes */
        memcpy(&word, p, 8);
        c = _mm_crc32_u64(c, word);
        p += 8;
        n -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (n--)
        c32 = _mm_crc32_u8(c32, *p++);
    return ~c32;
}
#endif

/* The CRC-32C of `n` bytes at `p`, continuing `crc`: the instruction once `crc_init` found it. */
static uint32_t (*crc32c)(uint32_t, const unsigned char *, size_t) = crc_tables;

/* Fill the tables and choose the instruction if the CPU has it; call once, at the module's import. */
static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0x82f63b78 : c >> 1;
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xff];
#if defined(__x86_64__)
    if (__builtin_cpu_supports("sse4.2"))
        crc32c = crc_sse42;
#endif
}

#endif
