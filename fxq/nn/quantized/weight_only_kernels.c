/* fxq's int4 and int8 weight-only matmuls for x86-64 CPUs with AVX2 (see weight_only_kernels.py for why they
   exist). Both round each activation row to int8 with one scale per weight group (symmetric, levels
   -127..127) and sum products in integers; `wscale` [N, Kp / G] float32 holds one scale per weight row and
   group of G inputs, and Kp is the input width padded to a multiple of G with zero levels.

   int4: `w` [N, Kp / 2] bytes, two 4-bit levels per byte (element 2j in the low nibble, 2j + 1 in the high one),
   each stored with an offset of 8. The activation levels are laid out in chunks of 64 (Kp is a multiple of 64)
   to match: a 32-byte load of weight bytes gives a chunk's 32 even elements in its low nibbles and its 32 odd
   ones in its high nibbles, so the activation chunk holds its even elements first. Products of unsigned levels
   (0..15) and activation levels are summed in 16 bits (maddubs: at most 2 * 15 * 127 per lane and pair, 8 pairs
   for a group of 256: 30480, no overflow), then in float per group; the weights' offset is removed per group
   with the sum of the activation levels. Groups of 32 share a chunk two by two and are scaled per chunk
   (`tile_rows_32`).

   int8: `w` [N, Kp] levels -128..127, activations in natural order (`tile_rows_int8`). */

#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#define CHUNK 64   /* inputs per 32-byte load of weight bytes */
#define TILE 4     /* weight rows computed together, sharing each activation load */
#define MBLOCK 32  /* activation rows walked per pass over the weight, so they stay in cache */

/* One activation row's int8 levels, per-group steps and (for int4) 8 x the sum of each group's levels; int4
   interleaves each chunk of 64 as its nibbles are (even elements first), int8 keeps the natural order. */
static void quantize_row(int interleave, const float* x, int64_t K, int64_t Kp, int64_t G, int8_t* q, float* scale,
                         float* offset) {
    for (int64_t g = 0; g < Kp / G; g++) {
        float amax = 0.f;
        for (int64_t k = g * G; k < (g + 1) * G && k < K; k++) amax = fmaxf(amax, fabsf(x[k]));
        float inv = amax > 0.f ? 127.f / amax : 0.f;
        int32_t sum = 0;
        for (int64_t k = g * G; k < (g + 1) * G; k++) {
            int32_t level = k < K ? (int32_t)lrintf(x[k] * inv) : 0;
            int64_t j = k % CHUNK;
            q[interleave ? k - j + (j & 1) * (CHUNK / 2) + j / 2 : k] = (int8_t)level;
            sum += level;
        }
        scale[g] = amax / 127.f;
        offset[g] = 8.f * (float)sum;
    }
}

static inline float horizontal_sum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* 16 pair sums of one chunk: levels (unsigned) times activation levels, even and odd elements added. */
static inline __m256i chunk_products(const uint8_t* bytes, __m256i even, __m256i odd, __m256i nibble) {
    __m256i packed = _mm256_loadu_si256((const __m256i*)bytes);
    __m256i low = _mm256_and_si256(packed, nibble);
    __m256i high = _mm256_and_si256(_mm256_srli_epi16(packed, 4), nibble);
    return _mm256_add_epi16(_mm256_maddubs_epi16(low, even), _mm256_maddubs_epi16(high, odd));
}

static void tile_rows(const int8_t* xq, const float* xscale, const float* xoffset, const void* weight,
                      const float* wscale, int64_t n0, int64_t rows, int64_t Kp, int64_t G, float* out) {
    const uint8_t* w = weight;
    const __m256i nibble = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
    const int64_t groups = Kp / G, chunks = G / CHUNK;
    const uint8_t* row[TILE];
    const float* rscale[TILE];
    for (int r = 0; r < TILE; r++) { /* a short last tile repeats its first row and discards the result */
        row[r] = w + (n0 + (r < rows ? r : 0)) * (Kp / 2);
        rscale[r] = wscale + (n0 + (r < rows ? r : 0)) * groups;
    }
    __m256 acc[TILE];
    float offset[TILE];
    for (int r = 0; r < TILE; r++) { acc[r] = _mm256_setzero_ps(); offset[r] = 0.f; }
    for (int64_t g = 0; g < groups; g++) {
        __m256i dot[TILE];
        for (int r = 0; r < TILE; r++) dot[r] = _mm256_setzero_si256();
        for (int64_t c = g * chunks; c < (g + 1) * chunks; c++) {
            __m256i even = _mm256_load_si256((const __m256i*)(xq + c * CHUNK));
            __m256i odd = _mm256_load_si256((const __m256i*)(xq + c * CHUNK + CHUNK / 2));
            for (int r = 0; r < TILE; r++)
                dot[r] = _mm256_add_epi16(dot[r], chunk_products(row[r] + c * (CHUNK / 2), even, odd, nibble));
        }
        for (int r = 0; r < TILE; r++) {
            float s = rscale[r][g] * xscale[g];
            __m256 sums = _mm256_cvtepi32_ps(_mm256_madd_epi16(dot[r], ones));
            acc[r] = _mm256_fmadd_ps(sums, _mm256_set1_ps(s), acc[r]);
            offset[r] += s * xoffset[g];
        }
    }
    for (int r = 0; r < rows; r++) out[r] = horizontal_sum(acc[r]) - offset[r];
}

/* Groups of 32: each chunk holds two groups, whose products land in the low and high 128 bits of the sums. */
static void tile_rows_32(const int8_t* xq, const float* xscale, const float* xoffset, const void* weight,
                         const float* wscale, int64_t n0, int64_t rows, int64_t Kp, int64_t G, float* out) {
    const uint8_t* w = weight;
    (void)G;
    const __m256i nibble = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
    const int64_t groups = Kp / 32;
    const uint8_t* row[TILE];
    const float* rscale[TILE];
    for (int r = 0; r < TILE; r++) {
        row[r] = w + (n0 + (r < rows ? r : 0)) * (Kp / 2);
        rscale[r] = wscale + (n0 + (r < rows ? r : 0)) * groups;
    }
    __m256 acc[TILE];
    float offset[TILE];
    for (int r = 0; r < TILE; r++) { acc[r] = _mm256_setzero_ps(); offset[r] = 0.f; }
    for (int64_t c = 0; c < Kp / CHUNK; c++) {
        __m256i even = _mm256_load_si256((const __m256i*)(xq + c * CHUNK));
        __m256i odd = _mm256_load_si256((const __m256i*)(xq + c * CHUNK + CHUNK / 2));
        for (int r = 0; r < TILE; r++) {
            float first = rscale[r][2 * c] * xscale[2 * c], second = rscale[r][2 * c + 1] * xscale[2 * c + 1];
            __m256i sums = _mm256_madd_epi16(chunk_products(row[r] + c * (CHUNK / 2), even, odd, nibble), ones);
            __m256 s = _mm256_set_m128(_mm_set1_ps(second), _mm_set1_ps(first));
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), s, acc[r]);
            offset[r] += first * xoffset[2 * c] + second * xoffset[2 * c + 1];
        }
    }
    for (int r = 0; r < rows; r++) out[r] = horizontal_sum(acc[r]) - offset[r];
}

/* int8. Weight: `w` [N, Kp] levels -128..127, `wscale` as for int4; Kp a multiple of 32. Products are summed by
   maddubs on |w| and the activation levels carrying w's sign (pair sums at most 2 * 128 * 127, no overflow),
   widened to 32 bits per 32 inputs. */
static void tile_rows_int8(const int8_t* xq, const float* xscale, const float* xoffset, const void* weight,
                           const float* wscale, int64_t n0, int64_t rows, int64_t Kp, int64_t G, float* out) {
    const int8_t* w = weight;
    (void)xoffset;
    const __m256i ones = _mm256_set1_epi16(1);
    const int64_t groups = Kp / G;
    const int8_t* row[TILE];
    const float* rscale[TILE];
    for (int r = 0; r < TILE; r++) {
        row[r] = w + (n0 + (r < rows ? r : 0)) * Kp;
        rscale[r] = wscale + (n0 + (r < rows ? r : 0)) * groups;
    }
    __m256 acc[TILE];
    for (int r = 0; r < TILE; r++) acc[r] = _mm256_setzero_ps();
    for (int64_t g = 0; g < groups; g++) {
        __m256i dot[TILE];
        for (int r = 0; r < TILE; r++) dot[r] = _mm256_setzero_si256();
        for (int64_t k = g * G; k < (g + 1) * G; k += 32) {
            __m256i activations = _mm256_load_si256((const __m256i*)(xq + k));
            for (int r = 0; r < TILE; r++) {
                __m256i weights = _mm256_loadu_si256((const __m256i*)(row[r] + k));
                __m256i signed_activations = _mm256_sign_epi8(activations, weights);
                __m256i pairs = _mm256_maddubs_epi16(_mm256_abs_epi8(weights), signed_activations);
                dot[r] = _mm256_add_epi32(dot[r], _mm256_madd_epi16(pairs, ones));
            }
        }
        for (int r = 0; r < TILE; r++)
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot[r]), _mm256_set1_ps(rscale[r][g] * xscale[g]), acc[r]);
    }
    for (int r = 0; r < rows; r++) out[r] = horizontal_sum(acc[r]);
}

typedef void (*tile_fn)(const int8_t*, const float*, const float*, const void*, const float*, int64_t, int64_t,
                        int64_t, int64_t, float*);

/* y [M, N] = x [M, K] @ dequantized(w)^T (+ bias) for `bits`-bit weights. Returns 0, or -1 where memory could
   not be allocated. */
static int weight_only_linear(int bits, const float* x, int64_t M, int64_t K, const void* w, const float* wscale,
                              int64_t N, int64_t Kp, int64_t G, const float* bias, float* y, int threads) {
    const int64_t groups = Kp / G, tiles = (N + TILE - 1) / TILE;
    const tile_fn tile = bits == 8 ? tile_rows_int8 : G == 32 ? tile_rows_32 : tile_rows;
    int8_t* xq = aligned_alloc(64, (size_t)((M * Kp + 63) / 64 * 64));
    float* xscale = malloc(sizeof(float) * (size_t)(M * groups));
    float* xoffset = malloc(sizeof(float) * (size_t)(M * groups));
    if (!xq || !xscale || !xoffset) {
        free(xq); free(xscale); free(xoffset);
        return -1;
    }
    #pragma omp parallel num_threads(threads)
    {
        #pragma omp for schedule(static)
        for (int64_t m = 0; m < M; m++)
            quantize_row(bits == 4, x + m * K, K, Kp, G, xq + m * Kp, xscale + m * groups, xoffset + m * groups);
        for (int64_t m0 = 0; m0 < M; m0 += MBLOCK) {
            const int64_t m1 = m0 + MBLOCK < M ? m0 + MBLOCK : M;
            #pragma omp for schedule(static)
            for (int64_t t = 0; t < tiles; t++) {
                const int64_t n0 = t * TILE, rows = N - n0 < TILE ? N - n0 : TILE;
                for (int64_t m = m0; m < m1; m++) {
                    float* out = y + m * N + n0;
                    tile(xq + m * Kp, xscale + m * groups, xoffset + m * groups, w, wscale, n0, rows, Kp, G, out);
                    if (bias)
                        for (int64_t r = 0; r < rows; r++) out[r] += bias[n0 + r];
                }
            }
        }
    }
    free(xq); free(xscale); free(xoffset);
    return 0;
}

int fxq_int4_linear(const float* x, int64_t M, int64_t K, const uint8_t* w, const float* wscale, int64_t N,
                    int64_t Kp, int64_t G, const float* bias, float* y, int threads) {
    return weight_only_linear(4, x, M, K, w, wscale, N, Kp, G, bias, y, threads);
}

int fxq_int8_linear(const float* x, int64_t M, int64_t K, const int8_t* w, const float* wscale, int64_t N,
                    int64_t Kp, int64_t G, const float* bias, float* y, int threads) {
    return weight_only_linear(8, x, M, K, w, wscale, N, Kp, G, bias, y, threads);
}

/* out [N, K] = the float32 weight: for many activation rows, a float matmul on it is faster. */
void fxq_int4_dequantize(const uint8_t* w, const float* wscale, int64_t N, int64_t K, int64_t Kp, int64_t G,
                         float* out, int threads) {
    const int64_t groups = Kp / G;
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t n = 0; n < N; n++) {
        const uint8_t* row = w + n * (Kp / 2);
        float* dst = out + n * K;
        for (int64_t g = 0; g < groups; g++) {
            const float s = wscale[n * groups + g];
            const int64_t end = (g + 1) * G < K ? (g + 1) * G : K;
            int64_t k = g * G;
            for (; k + 1 < end; k += 2) {
                const uint8_t byte = row[k / 2];
                dst[k] = (float)((int)(byte & 0x0F) - 8) * s;
                dst[k + 1] = (float)((int)(byte >> 4) - 8) * s;
            }
            if (k < end) dst[k] = (float)((int)(row[k / 2] & 0x0F) - 8) * s;
        }
    }
}
