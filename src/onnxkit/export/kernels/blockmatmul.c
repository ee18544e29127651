/* onnxkit BlockMatMul's arithmetic (layout: blockmatmul.h). Activations stay float32 throughout.

   One row of activations (decode): each record's codes become floats through a 16-entry table
   (q − zero_point), are multiplied by the activations in float32, summed per block and scaled:
   y[r] += scale[r] · Σ a[k]·(q[r][k] − z) + offset[r] · Σ a[k]; a few rows (batched decode) each so.
   More rows (prefill): a group of 16
   rows is dequantized once, as ggml does (scale · (q − z), then + offset), into a float panel that
   eight rows of activations at a time multiply. Both are the dequantized model's product up to
   float32 rounding.

   The AVX-512 path runs where the CPU has it (okx_vectorized); elsewhere a portable one does the
   same arithmetic, slowly. */
#include "blockmatmul.h"

#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

size_t okx_record_bytes(const okx_layout* l) {
    if ((l->block != 16 && l->block != 32) || (l->bits != 4 && l->bits != 8)) return 0;
    if ((l->scale_bits != 16 && l->scale_bits != 32) || l->k <= 0 || l->n <= 0 || l->k % l->block) return 0;
    if (l->k > OKX_MAX_DIM || l->n > OKX_MAX_DIM) return 0; /* keeps sizes derived from them in int64 */
    if (l->bits == 4 && (l->zero_point < 0 || l->zero_point > 15)) return 0;
    if (l->bits == 8 && l->zero_point != 0) return 0; /* 8-bit codes are stored already centred */
    size_t codes = (size_t)l->block * (l->bits == 4 ? 8 : 16);
    return codes + (size_t)(l->scale_bits / 8) * 16 * (l->has_offset ? 2 : 1);
}

static size_t code_bytes(const okx_layout* l) { return (size_t)l->block * (l->bits == 4 ? 8 : 16); }

int okx_vectorized(void) {
    const char* portable = getenv("ONNXKIT_KERNEL_PORTABLE"); /* tests run the portable path this way */
    if (portable && portable[0] == '1') return 0;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
}

/* ---- portable ---------------------------------------------------------------------------------- */

static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13);
    } else if (exp) {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    } else if (!man) {
        bits = sign;
    } else { /* subnormal: normalise */
        exp = 113;
        while (!(man & 0x400)) { man <<= 1; exp--; }
        bits = sign | (exp << 23) | ((man & 0x3ff) << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static float value_at(const uint8_t* p, int scale_bits, int r) {
    if (scale_bits == 32) {
        float f;
        memcpy(&f, p + 4 * r, sizeof f);
        return f;
    }
    uint16_t h;
    memcpy(&h, p + 2 * r, sizeof h);
    return half_to_float(h);
}

static int code_at(const okx_layout* l, const uint8_t* p, int r, int kk) {
    if (l->bits == 8) return (int8_t)p[16 * kk + r];
    uint8_t byte = p[16 * (kk / 2) + r];
    return (kk & 1 ? byte >> 4 : byte & 0x0f) - l->zero_point;
}

static void groups_portable(const okx_layout* l, const uint8_t* w, const float* a, int64_t rows, float* y,
                            int64_t g0, int64_t g1) {
    const int64_t nb = l->k / l->block;
    const size_t rec = okx_record_bytes(l), codes = code_bytes(l), vals = (size_t)(l->scale_bits / 8) * 16;
    float tile[32][16];
    for (int64_t g = g0; g < g1; g++) {
        const int live = l->n - 16 * g < 16 ? (int)(l->n - 16 * g) : 16;
        for (int64_t m = 0; m < rows; m++) memset(y + m * l->n + 16 * g, 0, sizeof(float) * (size_t)live);
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t* p = w + (size_t)(g * nb + b) * rec;
            for (int r = 0; r < 16; r++) {
                float scale = value_at(p + codes, l->scale_bits, r);
                float offset = l->has_offset ? value_at(p + codes + vals, l->scale_bits, r) : 0.0f;
                for (int kk = 0; kk < l->block; kk++) {
                    float v = scale * (float)code_at(l, p, r, kk);
                    tile[kk][r] = l->has_offset ? v + offset : v;
                }
            }
            for (int64_t m = 0; m < rows; m++) {
                const float* x = a + m * l->k + b * l->block;
                float* out = y + m * l->n + 16 * g;
                for (int r = 0; r < live; r++) {
                    float s = 0.0f;
                    for (int kk = 0; kk < l->block; kk++) s += x[kk] * tile[kk][r];
                    out[r] += s;
                }
            }
        }
    }
}

/* ---- AVX-512 ----------------------------------------------------------------------------------- */

#define AVX512 __attribute__((target("avx512f")))

AVX512 static inline __m512 load_values(const uint8_t* p, int scale_bits) {
    return scale_bits == 16 ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)p)) : _mm512_loadu_ps((const float*)p);
}

AVX512 static inline __m512 codes_u4(const uint8_t* p, int kk, __m512 table) {
    __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)(p + 16 * (kk / 2))));
    return _mm512_permutexvar_ps(kk & 1 ? _mm512_srli_epi32(v, 4) : v, table); /* reads each lane's low 4 bits */
}

AVX512 static inline __m512 codes_s8(const uint8_t* p, int kk) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)(p + 16 * kk))));
}

AVX512 static inline __m512 u4_table(int zero_point) {
    return _mm512_sub_ps(_mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                         _mm512_set1_ps((float)zero_point));
}

/* one row of activations: Σ a·(q − z) per block in float32, then scaled */
AVX512 static void gemv_avx512(const okx_layout* l, const uint8_t* w, const float* a, const float* sums, float* y,
                               int64_t g0, int64_t g1) {
    const int64_t nb = l->k / l->block;
    const int block = l->block, sb = l->scale_bits;
    const size_t rec = okx_record_bytes(l), codes = code_bytes(l), vals = (size_t)(sb / 8) * 16;
    const __m512 table = u4_table(l->zero_point);
    for (int64_t g = g0; g < g1; g++) {
        const uint8_t* p = w + (size_t)(g * nb) * rec;
        __m512 acc = _mm512_setzero_ps(), acc_offset = _mm512_setzero_ps();
        for (int64_t b = 0; b < nb; b++, p += rec) {
            const float* x = a + b * block;
            __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
            _mm_prefetch((const char*)(p + 4 * rec), _MM_HINT_T0);
            if (l->bits == 4) {
                for (int kk = 0; kk < block; kk += 4) {
                    __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)(p + 8 * kk)));
                    __m512i u = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)(p + 8 * kk + 16)));
                    s0 = _mm512_fmadd_ps(_mm512_permutexvar_ps(v, table), _mm512_set1_ps(x[kk]), s0);
                    s1 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), table), _mm512_set1_ps(x[kk + 1]), s1);
                    s2 = _mm512_fmadd_ps(_mm512_permutexvar_ps(u, table), _mm512_set1_ps(x[kk + 2]), s2);
                    s3 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(u, 4), table), _mm512_set1_ps(x[kk + 3]), s3);
                }
            } else {
                for (int kk = 0; kk < block; kk += 4) {
                    s0 = _mm512_fmadd_ps(codes_s8(p, kk), _mm512_set1_ps(x[kk]), s0);
                    s1 = _mm512_fmadd_ps(codes_s8(p, kk + 1), _mm512_set1_ps(x[kk + 1]), s1);
                    s2 = _mm512_fmadd_ps(codes_s8(p, kk + 2), _mm512_set1_ps(x[kk + 2]), s2);
                    s3 = _mm512_fmadd_ps(codes_s8(p, kk + 3), _mm512_set1_ps(x[kk + 3]), s3);
                }
            }
            __m512 s = _mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3));
            acc = _mm512_fmadd_ps(load_values(p + codes, sb), s, acc);
            if (l->has_offset)
                acc_offset = _mm512_fmadd_ps(load_values(p + codes + vals, sb), _mm512_set1_ps(sums[b]), acc_offset);
        }
        const int64_t live = l->n - 16 * g;
        const __mmask16 mask = live >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << live) - 1);
        _mm512_mask_storeu_ps(y + 16 * g, mask, _mm512_add_ps(acc, acc_offset));
    }
}

/* several rows: a row group's records dequantized once into a float panel (16 values per column of
   K, as ggml dequantizes them), which eight rows of activations at a time then multiply */
enum { PANEL_ROWS = 8 };

AVX512 static void dequantize_panel(const okx_layout* l, const uint8_t* p, float* panel) {
    const int64_t nb = l->k / l->block;
    const int block = l->block, sb = l->scale_bits;
    const size_t rec = okx_record_bytes(l), codes = code_bytes(l), vals = (size_t)(sb / 8) * 16;
    const __m512 table = u4_table(l->zero_point);
    for (int64_t b = 0; b < nb; b++, p += rec) {
        const __m512 scale = load_values(p + codes, sb);
        const __m512 offset = l->has_offset ? load_values(p + codes + vals, sb) : _mm512_setzero_ps();
        float* out = panel + b * block * 16;
        for (int kk = 0; kk < block; kk++) {
            __m512 v = _mm512_mul_ps(scale, l->bits == 4 ? codes_u4(p, kk, table) : codes_s8(p, kk));
            _mm512_store_ps(out + 16 * kk, l->has_offset ? _mm512_add_ps(v, offset) : v);
        }
    }
}

AVX512 static void gemm_avx512(const okx_layout* l, const uint8_t* w, const float* a, int64_t rows, float* y,
                               int64_t g0, int64_t g1, float* panel) {
    const int64_t k = l->k, nb = k / l->block;
    const size_t rec = okx_record_bytes(l);
    for (int64_t g = g0; g < g1; g++) {
        const int64_t live = l->n - 16 * g;
        const __mmask16 mask = live >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << live) - 1);
        dequantize_panel(l, w + (size_t)(g * nb) * rec, panel);
        int64_t m = 0;
        for (; m + PANEL_ROWS <= rows; m += PANEL_ROWS) {
            const float* x = a + m * k;
            __m512 acc[PANEL_ROWS], part[PANEL_ROWS]; /* summed per block, then added up: rounding grows
                                                         with the block, not with K */
            for (int i = 0; i < PANEL_ROWS; i++) acc[i] = _mm512_setzero_ps();
            for (int64_t c0 = 0; c0 < k; c0 += l->block) {
                for (int i = 0; i < PANEL_ROWS; i++) part[i] = _mm512_setzero_ps();
                for (int64_t c = c0; c < c0 + l->block; c++) {
                    const __m512 v = _mm512_load_ps(panel + 16 * c);
                    for (int i = 0; i < PANEL_ROWS; i++)
                        part[i] = _mm512_fmadd_ps(v, _mm512_set1_ps(x[i * k + c]), part[i]);
                }
                for (int i = 0; i < PANEL_ROWS; i++) acc[i] = _mm512_add_ps(acc[i], part[i]);
            }
            for (int i = 0; i < PANEL_ROWS; i++) _mm512_mask_storeu_ps(y + (m + i) * l->n + 16 * g, mask, acc[i]);
        }
        for (; m < rows; m++) { /* the rows left over: four partial sums each */
            const float* x = a + m * k;
            __m512 acc = _mm512_setzero_ps();
            for (int64_t c0 = 0; c0 < k; c0 += l->block) {
                __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
                for (int64_t c = c0; c < c0 + l->block; c += 4) { /* blocks are 16 or 32 long */
                    s0 = _mm512_fmadd_ps(_mm512_load_ps(panel + 16 * c), _mm512_set1_ps(x[c]), s0);
                    s1 = _mm512_fmadd_ps(_mm512_load_ps(panel + 16 * (c + 1)), _mm512_set1_ps(x[c + 1]), s1);
                    s2 = _mm512_fmadd_ps(_mm512_load_ps(panel + 16 * (c + 2)), _mm512_set1_ps(x[c + 2]), s2);
                    s3 = _mm512_fmadd_ps(_mm512_load_ps(panel + 16 * (c + 3)), _mm512_set1_ps(x[c + 3]), s3);
                }
                acc = _mm512_add_ps(acc, _mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
            }
            _mm512_mask_storeu_ps(y + m * l->n + 16 * g, mask, acc);
        }
    }
}

void okx_groups(const okx_layout* l, const uint8_t* w, const float* a, int64_t rows, const float* sums, float* y,
                int64_t g0, int64_t g1) {
    static int vectorized = -1;
    if (vectorized < 0) vectorized = okx_vectorized();
    if (!vectorized) {
        groups_portable(l, w, a, rows, y, g0, g1);
    } else if (rows == 1) {
        gemv_avx512(l, w, a, sums, y, g0, g1);
    } else if (rows <= OKX_GEMV_ROWS) { /* a group's records stay in cache from one row to the next */
        const int64_t nb = l->k / l->block;
        for (int64_t g = g0; g < g1; g++)
            for (int64_t m = 0; m < rows; m++)
                gemv_avx512(l, w, a + m * l->k, sums ? sums + m * nb : NULL, y + m * l->n, g, g + 1);
    } else {
        float* panel = aligned_alloc(64, (size_t)l->k * 16 * sizeof(float)); /* k·64 bytes: L2-resident */
        if (panel) {
            gemm_avx512(l, w, a, rows, y, g0, g1, panel);
            free(panel);
        } else {
            groups_portable(l, w, a, rows, y, g0, g1); /* needs no memory of its own */
        }
    }
}
