/*
 * bf16dot.c: C[m,n] = (accumulate ? C : 0) + bf16(A)[m,k] · Bᵀ with AVX512-BF16 (vdpbf16ps), for m ≤ 8 and B
 * stored [n,k] in bf16 (a Linear layer's weight [out, in]): the decode shapes of Gemm.MultiplyBf16.
 *
 * Built by scripts/build-bf16dot.sh into position-independent machine code that
 * src/AlignSharp/Engine/Kernels/Bf16DotCode.g.cs embeds and Bf16Dot.cs maps executable at run time (no native
 * library ships). So this file must compile to ONE self-contained function at offset 0 of .text: no calls (not even
 * memset), no relocations, no constant data; the script checks that with objdump.
 *
 * Numerics (the instruction's, MXCSR ignored): A is rounded to bf16 (round to nearest even, denormal inputs read as
 * zero, by vcvtne2ps2bf16); vdpbf16ps multiplies bf16 pairs exactly and adds them into float32 lanes (denormals
 * read as zero and flushed, round to nearest even). Lane i of an accumulator sums k positions p ≡ 2i, 2i+1 (mod 32);
 * the 16 lanes are summed at the end of each k-chunk (one chunk unless k > 1536, see columns), and the chunks'
 * sums are added into C in order. k past the last multiple of 32 is a masked load (zeros) of the same loop.
 */
#include <immintrin.h>
#include <stdint.h>

/* Shared with Bf16Dot.Args in C# (same order, same sizes). */
typedef struct
{
    const float* a;      /* A [m,k], row stride lda (float32) */
    const uint16_t* b;   /* B [n,k] bf16, row stride ldb */
    float* c;            /* C [m,n], row stride ldc */
    uint16_t* a16;       /* bf16(A) by k-chunk (see convert), at most m·(kp + 32·chunks) values, kp = k rounded up
                            to 32 (zero padded); written when convert != 0 */
    int64_t lda, ldb, ldc;
    int32_t m, k;
    int32_t j0, j1;      /* the B rows (C columns) of this call: [j0, j1) */
    int32_t accumulate;
    int32_t convert;     /* 1: only fill a16 from A; 2: only fill a16's positions [j0, j1) from A (see convert_range);
                            0: only compute columns [j0, j1) from a16 */
    int32_t stream_end;  /* this thread reads B rows [j1, stream_end) next (unless another takes them): the
                            prefetch runs on into them; ≤ j1: it stops at j1 */
    int32_t prefetch_l2; /* 1: B's lines are prefetched into L2 (prefetcht1), 0: into L1 (prefetcht0); see PF */
    /* The blocked product (convert 3, 4, 5; see gemm_block): */
    const uint32_t* pa;  /* bf16(A) in GMR-row panels (pack_a) */
    const uint32_t* pb;  /* B in GNR-column panels (pack_b) */
    uint32_t* pack;      /* where pack_a / pack_b write */
    int32_t rows, cols;  /* the block: rows of A and C, columns of B and C */
    int32_t kc;          /* k positions of the block (k pairs: (kc + 1) / 2) */
    int32_t trans_b;     /* pack_b: 1: B stored [n,k] (a Linear weight, the forward), 0: B stored [k,n] (its input gradient) */
} Args;

#define INLINE static inline __attribute__((always_inline))

/* B's prefetches, into L1 or L2 (L2 a compile-time constant of each instantiation, so no branch remains). Which is
 * faster depends on the core: on AMD family 0x1A (Zen 5) L1 streamed fastest (an L2 prefetch beside the per-row one was
 * 5-9% slower at m = 1); on family 0x19 (Zen 4), whose L1 serves fewer misses in flight, L1 prefetches held each core
 * to ~11 GB/s of B and L2 prefetches read 1.3-1.5x faster, as fast as a plain read (Bf16Dot.PrefetchIntoL2 chooses). */
#define PF(address, L2) _mm_prefetch((const char*)(address), (L2) ? _MM_HINT_T1 : _MM_HINT_T0)

/* Four vectors' horizontal sums, in order, as the 4 lanes of one __m128 (immediate shuffles only: no constants). */
INLINE __m128 sum4(__m512 x, __m512 y, __m512 z, __m512 w)
{
    __m512 t0 = _mm512_add_ps(_mm512_unpacklo_ps(x, y), _mm512_unpackhi_ps(x, y)); /* x0+x2 y0+y2 x1+x3 y1+y3 per 128 */
    __m512 t1 = _mm512_add_ps(_mm512_unpacklo_ps(z, w), _mm512_unpackhi_ps(z, w));
    __m512 u = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t0), _mm512_castps_pd(t1))),
                             _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t0), _mm512_castps_pd(t1))));
    u = _mm512_add_ps(u, _mm512_shuffle_f32x4(u, u, _MM_SHUFFLE(1, 0, 3, 2)));
    u = _mm512_add_ps(u, _mm512_shuffle_f32x4(u, u, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm512_castps512_ps128(u);
}

/* Bytes of bf16(A) (eight rows) that one k-chunk may hold: A is re-read for every tile, so it must stay in L1 (48 KB)
 * next to B's lines in flight. Past it (m = 8 at k = 4864, a down projection: 78 KB), A came from L2 and the product
 * ran at two thirds of the speed. */
#define A_CHUNK_BYTES 24576

/* k positions per k-chunk (a multiple of 32): k rounded up to 32 when eight rows of it fit A_CHUNK_BYTES, else equal
 * chunks that do. The chunks depend on k alone, never on m, so a row of C has the same bits whatever rows come with it
 * (the fused head re-makes one row's tile and must get the logits it sampled from). */
INLINE int chunk_step(int k)
{
    int64_t kp = (k + 31) & ~31;
    int chunks = (int)((8 * kp * 2 + A_CHUNK_BYTES - 1) / A_CHUNK_BYTES);
    return (int)((kp / 32 + chunks - 1) / chunks) * 32;
}

/* bf16(A), chunk-major: chunk c (k positions [c·step, c·step + step)) holds the m rows' values of its k positions,
 * step apart, zero padded past k; chunk c starts at c·m·step. With one chunk this is m rows of kp. A chunk's rows lie
 * together, so the tiles' A loads touch m·step·2 contiguous bytes, not m segments a whole row of A apart: with rows of
 * A 9.5 KB apart (the down projection, k = 4864, four chunks) m = 8 read 45.6 GB/s against 41.8–42.5 laid out by rows
 * (two runs of `decode-shapes`, the two builds alternating), and a batch-8 decoding step took 2–3% less. Why the layout
 * matters that much is not known (no hardware counters here). */
INLINE void convert(const Args* s)
{
    int64_t kp = (s->k + 31) & ~31;
    int step = chunk_step(s->k);
    for (int r = 0; r < s->m; r++)
    {
        const float* ar = s->a + r * s->lda;
        for (int p = 0; p < kp; p += 32)
        {
            int c = p / step;
            uint16_t* dr = s->a16 + (int64_t)c * s->m * step + (int64_t)r * step + (p - c * step);
            int left = s->k - p;
            __mmask16 lo = left >= 16 ? (__mmask16)0xFFFF : left > 0 ? (__mmask16)((1u << left) - 1) : 0;
            __mmask16 hi = left >= 32 ? (__mmask16)0xFFFF : left > 16 ? (__mmask16)((1u << (left - 16)) - 1) : 0;
            __m512 x = _mm512_maskz_loadu_ps(lo, ar + p), y = _mm512_maskz_loadu_ps(hi, ar + p + 16);
            _mm512_storeu_si512(dr, (__m512i)_mm512_cvtne2ps_pbh(y, x));
        }
    }
}

/* convert's layout, for k positions [j0, j1) of each row only (with j1 = k, also the zeros up to kp): the threads of a
 * gated MLP each write the columns of its hidden activations they have just computed, so the down projection that
 * reads them as its A finds them rounded. A 32-block the range cuts is loaded and stored under masks, so a thread never
 * writes another's positions; the values are convert's, by the same instruction. */
INLINE void convert_range(const Args* s)
{
    int64_t kp = (s->k + 31) & ~31;
    int step = chunk_step(s->k);
    int64_t end = s->j1 >= s->k ? kp : s->j1;
    for (int r = 0; r < s->m; r++)
    {
        const float* ar = s->a + r * s->lda;
        for (int64_t p = s->j0 & ~31; p < end; p += 32)
        {
            int c = (int)(p / step);
            uint16_t* dr = s->a16 + (int64_t)c * s->m * step + (int64_t)r * step + (p - (int64_t)c * step);
            int first = s->j0 > p ? (int)(s->j0 - p) : 0;
            int stored = end - p < 32 ? (int)(end - p) : 32, loaded = s->k - p < stored ? (int)(s->k - p) : stored;
            __mmask32 out = (stored == 32 ? 0xFFFFFFFFu : (1u << stored) - 1) & ~((1u << first) - 1);
            __mmask32 in = (loaded == 32 ? 0xFFFFFFFFu : (1u << loaded) - 1) & out;
            __m512 x = _mm512_maskz_loadu_ps((__mmask16)in, ar + p), y = _mm512_maskz_loadu_ps((__mmask16)(in >> 16), ar + p + 16);
            _mm512_mask_storeu_epi16(dr, out, (__m512i)_mm512_cvtne2ps_pbh(y, x));
        }
    }
}

/* The prefetch runs PREFETCH_LEAD rows of B ahead of the tile being read, in blocks of PREFETCH_ROWS rows taken in
 * lockstep: line 0 of each of the block's rows, then line 1 of each, and so on, as many lines per k-step as the tile
 * loads, so the lead stays constant. The hardware prefetcher does not keep up on its own (rows of 1–10 KB are too short
 * for it to ramp up on). Eight B rows advancing side by side is what the memory system serves best here. Measured on
 * two cores over the 0.5B shape's 24 layers + head, two kernel builds alternating in one process, on a host that
 * streamed ≈ 50 GB/s: against the linear prefetch used before (in address order, 8 KB ahead into L1 and 64 KB into
 * L2), m = 8 (tiles of 3 B rows) read 1.16-1.24x faster, m = 3 1.13-1.25x, m = 4 and 6 1.05-1.16x, which brought them
 * to the speed of m = 1, whose 8-row tiles prefetch the same line of the next tile's rows: this same pattern. On a host
 * busy enough that every variant reads ≈ 30 GB/s they differ by less than 5%. The arithmetic was not what held m = 8
 * back: with 1/8 of its vdpbf16ps it read at the same speed. */
#define PREFETCH_ROWS 8
#define PREFETCH_LEAD 8

/* Where the prefetch is: the block's first row, the row within the block, the line within the rows' k-chunk; rows
 * from `end` on are not prefetched. The address is recomputed from these for every line (a multiply): stepping a pointer
 * instead, before or after the step's arithmetic, read 5-10% slower at m = 8 and 4-9% slower at m = 4, 6 in the
 * same alternating runs. Why is not understood; it is measured, and the scheme is kept as measured. */
typedef struct
{
    int64_t row;
    int r, line;
    int lines;           /* 64-byte lines per row in this k-chunk */
    int64_t end;
} Cursor;

INLINE void prefetch_next(const Args* s, Cursor* c, int k0, const int L2)
{
    int64_t row = c->row + c->r;
    if (row < c->end) PF((const char*)(s->b + row * s->ldb + k0) + (int64_t)c->line * 64, L2);
    if (++c->r == PREFETCH_ROWS)
    {
        c->r = 0;
        if (++c->line == c->lines) { c->line = 0; c->row += PREFETCH_ROWS; }
    }
}

/* One MR×NR tile over k positions [k0, k1): rows 0..MR-1 of C (MR = m), columns j..j+cols-1 (cols ≤ NR; missing B
 * rows read row j again and their sums are dropped); adds into C when accumulate is set. k0 is a multiple of 32. Each
 * k-step prefetches NR lines at the cursor (see PREFETCH_ROWS); 8-row tiles prefetch the same line of the next tile's
 * rows directly, which is where the cursor would be, without its bookkeeping (13% of m = 1's speed). */
INLINE void tile(const Args* s, const int MR, const int NR, const int L2, int j, int cols, int k0, int k1, int step, int accumulate, Cursor* cursor)
{
    /* This chunk's rows of bf16(A) (see convert), indexed by absolute k. */
    const uint16_t* ak = s->a16 + (int64_t)(k0 / step) * MR * step - k0;
    int kv = k1 & ~31;
    /* Fixed sizes (not [MR][NR], which would be variable-length arrays): unrolled, they live in registers. */
    const uint16_t* br[8];
    __m512 acc[8][8];
#pragma GCC unroll 8
    for (int q = 0; q < NR; q++) br[q] = s->b + (int64_t)(j + (q < cols ? q : 0)) * s->ldb;
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++)
#pragma GCC unroll 8
        for (int q = 0; q < NR; q++) acc[r][q] = _mm512_setzero_ps();
    for (int p = k0; p < kv; p += 32)
    {
        __m512bh bv[8];
#pragma GCC unroll 8
        for (int q = 0; q < NR; q++)
        {
            /* With 8-row tiles the cursor would be exactly here: the same line of the next tile's rows. */
            if (NR == PREFETCH_ROWS) PF(br[q] + p + PREFETCH_ROWS * s->ldb, L2);
            else prefetch_next(s, cursor, k0, L2);
            bv[q] = (__m512bh)_mm512_loadu_si512(br[q] + p);
        }
#pragma GCC unroll 8
        for (int r = 0; r < MR; r++)
        {
            __m512bh av = (__m512bh)_mm512_loadu_si512(ak + (int64_t)r * step + p);
#pragma GCC unroll 8
            for (int q = 0; q < NR; q++) acc[r][q] = _mm512_dpbf16_ps(acc[r][q], av, bv[q]);
        }
    }
    if (kv < k1)
    {
        /* The tail: bf16(A) is zero padded; B is loaded under a mask (zeros, no read past the row). */
        __mmask32 mask = (__mmask32)((1u << (k1 - kv)) - 1);
        __m512bh bv[8];
#pragma GCC unroll 8
        for (int q = 0; q < NR; q++)
        {
            if (NR != PREFETCH_ROWS) prefetch_next(s, cursor, k0, L2);
            bv[q] = (__m512bh)_mm512_maskz_loadu_epi16(mask, br[q] + kv);
        }
#pragma GCC unroll 8
        for (int r = 0; r < MR; r++)
        {
            __m512bh av = (__m512bh)_mm512_loadu_si512(ak + (int64_t)r * step + kv);
#pragma GCC unroll 8
            for (int q = 0; q < NR; q++) acc[r][q] = _mm512_dpbf16_ps(acc[r][q], av, bv[q]);
        }
    }
    /* Sums of the MR·NR accumulators in row-major order, four at a time (the last group padded with zeros). */
    float sums[64];
    __m512 zero = _mm512_setzero_ps();
#pragma GCC unroll 16
    for (int g = 0; g < MR * NR; g += 4)
    {
        __m512 x = acc[g / NR][g % NR];
        __m512 y = g + 1 < MR * NR ? acc[(g + 1) / NR][(g + 1) % NR] : zero;
        __m512 z = g + 2 < MR * NR ? acc[(g + 2) / NR][(g + 2) % NR] : zero;
        __m512 w = g + 3 < MR * NR ? acc[(g + 3) / NR][(g + 3) % NR] : zero;
        _mm_storeu_ps(sums + g, sum4(x, y, z, w));
    }
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++)
    {
        float* cr = s->c + r * s->ldc + j;
#pragma GCC unroll 8
        for (int q = 0; q < NR; q++)
            if (q < cols) cr[q] = accumulate ? cr[q] + sums[r * NR + q] : sums[r * NR + q];
    }
}

/* Every tile of columns [j0, j1) with MR = m rows and NR columns, k-chunk by k-chunk (chunk_step), each chunk sweeping
 * all the columns and adding its sums into C (B is still read once; C's rows of this share stay in cache). With tiles
 * narrower than PREFETCH_ROWS each sweep first prefetches its first PREFETCH_LEAD rows, then the cursor runs that far
 * ahead; in a single sweep it runs on into the rows this thread reads next (stream_end: a chunk's prefetch continues
 * into the thread's next chunk, which then starts warm). */
INLINE void columns(const Args* s, const int MR, const int NR, const int L2)
{
    int step = chunk_step(s->k);
    for (int k0 = 0; k0 < s->k; k0 += step)
    {
        int k1 = s->k - k0 < step ? s->k : k0 + step;
        Cursor cursor = { s->j0 + PREFETCH_LEAD, 0, 0, (k1 - k0 + 31) / 32,
                          step >= s->k && s->stream_end > s->j1 ? s->stream_end : s->j1 };
        if (NR != PREFETCH_ROWS)
            for (int64_t row = s->j0; row < s->j0 + PREFETCH_LEAD && row < s->j1; row++)
                for (int line = 0; line < cursor.lines; line++)
                    PF((const char*)(s->b + row * s->ldb + k0) + (int64_t)line * 64, L2);
        for (int j = s->j0; j < s->j1; j += NR)
        {
            int cols = s->j1 - j < NR ? s->j1 - j : NR;
            tile(s, MR, NR, L2, j, cols, k0, k1, step, k0 > 0 || s->accumulate, &cursor);
        }
    }
}

/* Tile widths: as many B rows per tile as the 32 vector registers allow next to m·NR accumulators, so B is read once
 * and each A load serves NR products. */
INLINE void sizes(const Args* s, const int L2)
{
    switch (s->m)
    {
        case 1: columns(s, 1, 8, L2); break;
        case 2: columns(s, 2, 8, L2); break;
        case 3: columns(s, 3, 6, L2); break;
        case 4: columns(s, 4, 4, L2); break;
        case 5: columns(s, 5, 4, L2); break;
        case 6: columns(s, 6, 4, L2); break;
        case 7: columns(s, 7, 3, L2); break;
        case 8: columns(s, 8, 3, L2); break;
        default: break;
    }
}

/* ---- The blocked product for many rows: C[rows, cols] (+)= bf16(A) · B, one KC-deep slice of one block. ----
 * The five-loop blocking of Gemm.cs (C#: the loops over blocks and threads, here: the packing and the micro-kernel), with
 * vdpbf16ps: each instruction multiplies 16 lanes' pairs of bf16 values, exactly, and adds both into float32 lanes, so a
 * register tile accumulates along k pairs. A is rounded to bf16 as convert rounds it (vcvtne2ps2bf16). Packed, element q
 * of a panel is a k pair: (value at k = 2q, value at k = 2q + 1) as one 32-bit word, low half first, zero past kc.
 *   A panel (GMR rows): word q·GMR + r = row r's pair q;   B panel (GNR columns): word q·GNR + j = column j's pair q.
 * Every C element is one chain over the slice's k pairs in increasing order, started at zero and then added to C (when
 * accumulating, or a later slice) or stored: its value does not depend on which tile, block or thread computed it. */
#define GMR 12
#define GNR 32

/* dst[i·ld + j] = word i of src row j (a transpose), for a 16 × 16 block of 32-bit words at src (row stride lds words): four
 * rounds of immediate shuffles (no constants, see the top of the file). */
INLINE void transpose16(const uint32_t* src, int64_t lds, uint32_t* dst, int64_t ld)
{
    __m512i r[16], t[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_si512(src + i * lds);
#pragma GCC unroll 8
    for (int i = 0; i < 16; i += 2)
    {
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
#pragma GCC unroll 4
    for (int i = 0; i < 16; i += 4)
    {
        r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
        r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
        r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
        r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    /* r[4g + c] holds, in each 128-bit lane L, word 4L + c of rows 4g..4g+3; gather lane L of the four groups. */
#pragma GCC unroll 4
    for (int c = 0; c < 4; c++)
    {
        t[c] = _mm512_shuffle_i32x4(r[c], r[4 + c], _MM_SHUFFLE(2, 0, 2, 0));
        t[4 + c] = _mm512_shuffle_i32x4(r[c], r[4 + c], _MM_SHUFFLE(3, 1, 3, 1));
        t[8 + c] = _mm512_shuffle_i32x4(r[8 + c], r[12 + c], _MM_SHUFFLE(2, 0, 2, 0));
        t[12 + c] = _mm512_shuffle_i32x4(r[8 + c], r[12 + c], _MM_SHUFFLE(3, 1, 3, 1));
    }
#pragma GCC unroll 4
    for (int c = 0; c < 4; c++)
    {
        r[c] = _mm512_shuffle_i32x4(t[c], t[8 + c], _MM_SHUFFLE(2, 0, 2, 0));
        r[8 + c] = _mm512_shuffle_i32x4(t[c], t[8 + c], _MM_SHUFFLE(3, 1, 3, 1));
        r[4 + c] = _mm512_shuffle_i32x4(t[4 + c], t[12 + c], _MM_SHUFFLE(2, 0, 2, 0));
        r[12 + c] = _mm512_shuffle_i32x4(t[4 + c], t[12 + c], _MM_SHUFFLE(3, 1, 3, 1));
    }
    /* r[w] is now output row w: word w of the 16 rows. */
#pragma GCC unroll 16
    for (int w = 0; w < 16; w++) _mm512_storeu_si512(dst + w * ld, r[w]);
}

/* Rows [0, rows) of A (float32, row stride lda, already at the block's first k) into GMR-row panels; rows past `rows`
 * up to a whole panel are zero. Each 32 k positions of a panel's rows are rounded into a 16 × 16 block of words (rows
 * past the panel zero), transposed (word w of every row together) and stored GMR words at a time: one word at a time,
 * the packing of A took a quarter as long as the product for n = 128 (a k or v projection), where both threads pack all of A. */
INLINE void pack_a(const Args* s)
{
    int kq = (s->kc + 1) / 2;
    uint32_t words[16 * 16];
    for (int r0 = 0; r0 < s->rows; r0 += GMR)
    {
        uint32_t* panel = s->pack + (int64_t)r0 * kq;
        int height = s->rows - r0 < GMR ? s->rows - r0 : GMR;
        for (int p = 0; p < s->kc; p += 32)
        {
            int left = s->kc - p;
            __mmask16 lo = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
            __mmask16 hi = left >= 32 ? (__mmask16)0xFFFF : left > 16 ? (__mmask16)((1u << (left - 16)) - 1) : 0;
            for (int r = 0; r < 16; r++)
            {
                __m512i w = _mm512_setzero_si512();
                if (r < height)
                {
                    const float* ar = s->a + (int64_t)(r0 + r) * s->lda + p;
                    w = (__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(hi, ar + 16), _mm512_maskz_loadu_ps(lo, ar));
                }
                _mm512_storeu_si512(words + r * 16, w);
            }
            transpose16(words, 16, words, 16); /* in place: it loads all 16 rows before it stores */
            int pairs = (left + 1) / 2 < 16 ? (left + 1) / 2 : 16;
            for (int q = 0; q < pairs; q++)
                _mm512_mask_storeu_epi32(panel + (int64_t)(p / 2 + q) * GMR, (__mmask16)((1u << GMR) - 1), _mm512_loadu_si512(words + q * 16));
        }
    }
}

/* Columns [0, cols) of B (bf16, already at the block's first k and column) into GNR-column panels; columns past `cols`
 * up to a whole panel are zero. */
INLINE void pack_b(const Args* s)
{
    int kq = (s->kc + 1) / 2, whole = s->kc / 2;
    for (int j0 = 0; j0 < s->cols; j0 += GNR)
    {
        uint32_t* panel = s->pack + (int64_t)j0 * kq;
        int width = s->cols - j0 < GNR ? s->cols - j0 : GNR;
        if (s->trans_b)
        {
            /* Column j is row j of the stored B, its pairs consecutive words: 16 × 16 blocks of words transposed, the
             * rest (a partial panel, pairs past the last 16, an odd kc's last value) one word at a time. */
            int q16 = width == GNR && !(s->ldb & 1) ? whole & ~15 : 0; /* word rows need an even stride */
            for (int q = 0; q < q16; q += 16)
                for (int j = 0; j < GNR; j += 16)
                    transpose16((const uint32_t*)(s->b + (int64_t)(j0 + j) * s->ldb) + q, s->ldb / 2, panel + q * GNR + j, GNR);
            for (int j = 0; j < GNR; j++)
            {
                if (j >= width)
                {
                    for (int q = 0; q < kq; q++) panel[q * GNR + j] = 0;
                    continue;
                }
                const uint16_t* br = s->b + (int64_t)(j0 + j) * s->ldb;
                for (int q = q16; q < whole; q++) panel[q * GNR + j] = br[2 * q] | (uint32_t)br[2 * q + 1] << 16;
                if (s->kc & 1) panel[(kq - 1) * GNR + j] = br[s->kc - 1];
            }
        }
        else
        {
            /* Pair q interleaves stored rows 2q and 2q + 1: 16-bit unpacks give the words of columns 0-3, 8-11, ... and
             * 4-7, 12-15, ...; two 128-bit shuffles put them in order. */
            __mmask32 in = width == GNR ? 0xFFFFFFFFu : (1u << width) - 1;
            for (int q = 0; q < kq; q++)
            {
                const uint16_t* even = s->b + (int64_t)(2 * q) * s->ldb + j0;
                __m512i e = _mm512_maskz_loadu_epi16(in, even);
                __m512i o = 2 * q + 1 < s->kc ? _mm512_maskz_loadu_epi16(in, even + s->ldb) : _mm512_setzero_si512();
                __m512i lo = _mm512_unpacklo_epi16(e, o), hi = _mm512_unpackhi_epi16(e, o);
                __m512i t0 = _mm512_shuffle_i32x4(lo, hi, _MM_SHUFFLE(1, 0, 1, 0)), t1 = _mm512_shuffle_i32x4(lo, hi, _MM_SHUFFLE(3, 2, 3, 2));
                _mm512_storeu_si512(panel + q * GNR, _mm512_shuffle_i32x4(t0, t0, _MM_SHUFFLE(3, 1, 2, 0)));
                _mm512_storeu_si512(panel + q * GNR + 16, _mm512_shuffle_i32x4(t1, t1, _MM_SHUFFLE(3, 1, 2, 0)));
            }
        }
    }
}

/* One GMR × GNR tile: rows [0, rows) and the columns of masks m0, m1 of C get the panels' product over kq pairs. */
INLINE void gemm_tile(const uint32_t* ap, const uint32_t* bp, int kq, float* c, int64_t ldc, int rows,
                      __mmask16 m0, __mmask16 m1, int accumulate)
{
    __m512 acc[GMR][2];
#pragma GCC unroll 12
    for (int r = 0; r < GMR; r++) { acc[r][0] = _mm512_setzero_ps(); acc[r][1] = _mm512_setzero_ps(); }
    for (int q = 0; q < kq; q++)
    {
        __m512bh b0 = (__m512bh)_mm512_loadu_si512(bp + q * GNR), b1 = (__m512bh)_mm512_loadu_si512(bp + q * GNR + 16);
#pragma GCC unroll 12
        for (int r = 0; r < GMR; r++)
        {
            __m512bh a = (__m512bh)_mm512_set1_epi32((int)ap[q * GMR + r]);
            acc[r][0] = _mm512_dpbf16_ps(acc[r][0], a, b0);
            acc[r][1] = _mm512_dpbf16_ps(acc[r][1], a, b1);
        }
    }
#pragma GCC unroll 12
    for (int r = 0; r < GMR; r++)
    {
        if (r >= rows) break;
        float* cr = c + r * ldc;
        __m512 x = acc[r][0], y = acc[r][1];
        if (accumulate)
        {
            x = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, cr), x);
            y = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, cr + 16), y);
        }
        _mm512_mask_storeu_ps(cr, m0, x);
        _mm512_mask_storeu_ps(cr + 16, m1, y);
    }
}

/* Every tile of the block: B's panels outermost (one stays in L1 while A's panels stream from L2 past it). */
INLINE void gemm_block(const Args* s)
{
    int kq = (s->kc + 1) / 2;
    for (int j0 = 0; j0 < s->cols; j0 += GNR)
    {
        int width = s->cols - j0;
        __mmask16 m0 = width >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << width) - 1);
        __mmask16 m1 = width >= 32 ? (__mmask16)0xFFFF : width > 16 ? (__mmask16)((1u << (width - 16)) - 1) : 0;
        const uint32_t* bp = s->pb + (int64_t)j0 * kq;
        for (int r0 = 0; r0 < s->rows; r0 += GMR)
            gemm_tile(s->pa + (int64_t)r0 * kq, bp, kq, s->c + r0 * s->ldc + j0, s->ldc,
                      s->rows - r0, m0, m1, s->accumulate);
    }
}

/* The entry point (offset 0 of the extracted code). */
void bf16dot_entry(const Args* s)
{
    if (s->convert == 3) { pack_a(s); return; }
    if (s->convert == 4) { pack_b(s); return; }
    if (s->convert == 5) { gemm_block(s); return; }
    if (s->convert == 1) { convert(s); return; }
    if (s->convert == 2) { convert_range(s); return; }
    if (s->prefetch_l2) sizes(s, 1);
    else sizes(s, 0);
}
