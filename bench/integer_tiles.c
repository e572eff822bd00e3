// What integer dot products would give a compute-bound step with AVX2 (a prefill or 32-row decode step), against
// float32 FMA tiles: three GEMM micro-tiles of 4 rows x 24 columns, operands in L1, all threads at once.
//   fp32: packed_linear's AVX2 tile, one FMA per 8 products;
//   u8:   codes of 8 bytes or fewer made unsigned (bfp4's -7..7 plus 8), times 8-bit input codes (vpmaddubsw,
//         4 k x 8 columns a vector), summed in 16 bits over a 16-deep k block, widened once per block, converted
//         and scaled by a per-column, per-block float;
//   s8:   bfp8's -127..127 codes, which need vpmaddubsw's sign trick (|x|, sign(w, x)) and widening every 4 k;
//   s16:  16-bit codes times 16-bit input codes (vpmaddwd, 2 k x 8 columns a vector), summed in 32 bits over the
//         block: what codes shifted to a common exponent over a block of k would take.
// It measures arithmetic only: no decode, no memory, no scale that changes along k inside a block.
//
//     gcc -O3 -mavx2 -mfma -fopenmp bench/integer_tiles.c -o /tmp/integer_tiles && OMP_NUM_THREADS=2 /tmp/integer_tiles
#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define K 256
#define ROWS 4
#define COLUMNS 24
#define REPEATS 4000000L

static float weights[K * COLUMNS] __attribute__((aligned(64)));       // [K][24]
static float inputs[ROWS * K] __attribute__((aligned(64)));           // [4][K]
static int8_t weight_codes[K * COLUMNS] __attribute__((aligned(64)));  // [K/4][24][4]
static int8_t input_codes[ROWS * K] __attribute__((aligned(64)));
static int16_t weight_codes16[K * COLUMNS] __attribute__((aligned(64)));  // [K/2][24][2]
static int16_t input_codes16[ROWS * K] __attribute__((aligned(64)));
static float block_scales[K / 16 * COLUMNS] __attribute__((aligned(64)));

static __m256i broadcast_4_codes(int row, int k) {
  int32_t four;
  memcpy(&four, input_codes + row * K + k, 4);
  return _mm256_set1_epi32(four);
}

// The tile's accumulators: zeroed, stored, and (the integer tiles) a block's 32-bit sums converted and scaled into
// them. Always inlined: each tile keeps its accumulators in registers.
static inline __attribute__((always_inline)) void zero_tile(__m256 acc[ROWS][3]) {
  for (int r = 0; r < ROWS; ++r)
    for (int j = 0; j < 3; ++j) acc[r][j] = _mm256_setzero_ps();
}

static inline __attribute__((always_inline)) void store_tile(float *out, __m256 acc[ROWS][3]) {
  for (int r = 0; r < ROWS; ++r)
    for (int j = 0; j < 3; ++j) _mm256_storeu_ps(out + r * COLUMNS + j * 8, acc[r][j]);
}

static inline __attribute__((always_inline)) void add_block(__m256 acc[ROWS][3], __m256i sums[ROWS][3], int block) {
  for (int j = 0; j < 3; ++j) {
    __m256 scale = _mm256_load_ps(block_scales + block * COLUMNS + j * 8);
    for (int r = 0; r < ROWS; ++r) acc[r][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums[r][j]), scale, acc[r][j]);
  }
}

static __attribute__((noinline)) void fp32_tile(float *out) {
  __m256 acc[ROWS][3];
  zero_tile(acc);
  for (int k = 0; k < K; ++k) {
    const float *w = weights + k * COLUMNS;
    __m256 w0 = _mm256_load_ps(w), w1 = _mm256_load_ps(w + 8), w2 = _mm256_load_ps(w + 16);
    for (int r = 0; r < ROWS; ++r) {
      __m256 x = _mm256_broadcast_ss(inputs + r * K + k);
      acc[r][0] = _mm256_fmadd_ps(x, w0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(x, w1, acc[r][1]);
      acc[r][2] = _mm256_fmadd_ps(x, w2, acc[r][2]);
    }
  }
  store_tile(out, acc);
}

static __attribute__((noinline)) void integer_tile(float *out, int signed_weights) {
  __m256 acc[ROWS][3];
  zero_tile(acc);
  const __m256i ones = _mm256_set1_epi16(1);
  for (int block = 0; block < K / 16; ++block) {
    __m256i sums[ROWS][3];
    for (int r = 0; r < ROWS; ++r)
      for (int j = 0; j < 3; ++j) sums[r][j] = _mm256_setzero_si256();
    for (int step = 0; step < 4; ++step) {
      const int8_t *w = weight_codes + (block * 4 + step) * 4 * COLUMNS;
      __m256i w0 = _mm256_load_si256((const __m256i *)w), w1 = _mm256_load_si256((const __m256i *)(w + 32)),
              w2 = _mm256_load_si256((const __m256i *)(w + 64));
      for (int r = 0; r < ROWS; ++r) {
        __m256i x = broadcast_4_codes(r, block * 16 + step * 4);
        if (signed_weights) {  // 32-bit sums every 4 k: two 127 x 127 products fill 16 bits
          __m256i magnitude = _mm256_abs_epi8(x);
          sums[r][0] = _mm256_add_epi32(sums[r][0], _mm256_madd_epi16(_mm256_maddubs_epi16(magnitude, _mm256_sign_epi8(w0, x)), ones));
          sums[r][1] = _mm256_add_epi32(sums[r][1], _mm256_madd_epi16(_mm256_maddubs_epi16(magnitude, _mm256_sign_epi8(w1, x)), ones));
          sums[r][2] = _mm256_add_epi32(sums[r][2], _mm256_madd_epi16(_mm256_maddubs_epi16(magnitude, _mm256_sign_epi8(w2, x)), ones));
        } else {  // 16-bit sums over the block: 8 products of 15 x 127 fit
          sums[r][0] = _mm256_add_epi16(sums[r][0], _mm256_maddubs_epi16(w0, x));
          sums[r][1] = _mm256_add_epi16(sums[r][1], _mm256_maddubs_epi16(w1, x));
          sums[r][2] = _mm256_add_epi16(sums[r][2], _mm256_maddubs_epi16(w2, x));
        }
      }
    }
    if (!signed_weights)  // widen the 16-bit sums
      for (int r = 0; r < ROWS; ++r)
        for (int j = 0; j < 3; ++j) sums[r][j] = _mm256_madd_epi16(sums[r][j], ones);
    add_block(acc, sums, block);
  }
  store_tile(out, acc);
}

static __attribute__((noinline)) void int16_tile(float *out) {
  __m256 acc[ROWS][3];
  zero_tile(acc);
  for (int block = 0; block < K / 16; ++block) {
    __m256i sums[ROWS][3];
    for (int r = 0; r < ROWS; ++r)
      for (int j = 0; j < 3; ++j) sums[r][j] = _mm256_setzero_si256();
    for (int step = 0; step < 8; ++step) {
      const int16_t *w = weight_codes16 + (block * 8 + step) * 2 * COLUMNS;
      __m256i w0 = _mm256_load_si256((const __m256i *)w), w1 = _mm256_load_si256((const __m256i *)(w + 16)),
              w2 = _mm256_load_si256((const __m256i *)(w + 32));
      for (int r = 0; r < ROWS; ++r) {
        int32_t two;
        memcpy(&two, input_codes16 + r * K + block * 16 + step * 2, 4);
        __m256i x = _mm256_set1_epi32(two);
        sums[r][0] = _mm256_add_epi32(sums[r][0], _mm256_madd_epi16(w0, x));
        sums[r][1] = _mm256_add_epi32(sums[r][1], _mm256_madd_epi16(w1, x));
        sums[r][2] = _mm256_add_epi32(sums[r][2], _mm256_madd_epi16(w2, x));
      }
    }
    add_block(acc, sums, block);
  }
  store_tile(out, acc);
}

int main(void) {
  for (int i = 0; i < K * COLUMNS; ++i) weights[i] = (float)(i % 7) * 0.1f, weight_codes[i] = (int8_t)(i % 15);
  for (int i = 0; i < K * COLUMNS; ++i) weight_codes16[i] = (int16_t)(i % 15 * 100);
  for (int i = 0; i < ROWS * K; ++i) input_codes16[i] = (int16_t)(i % 200 - 100);
  for (int i = 0; i < ROWS * K; ++i) inputs[i] = (float)(i % 5) * 0.2f, input_codes[i] = (int8_t)(i % 200 - 100);
  for (int i = 0; i < K / 16 * COLUMNS; ++i) block_scales[i] = 1.0f / (float)(1 + i % 3);
  const char *names[4] = {"fp32 (FMA)", "u8 x s8 (bfp4-like)", "s8 x s8 (bfp8-like)", "s16 x s16"};
  for (int variant = 0; variant < 4; ++variant) {
    double start = omp_get_wtime(), check = 0;
#pragma omp parallel reduction(+ : check)
    {
      float out[ROWS * COLUMNS];
      for (long i = 0; i < REPEATS; ++i) {
        if (variant == 0) fp32_tile(out);
        else if (variant == 3) int16_tile(out);
        else integer_tile(out, variant == 2);
        check += out[i % (ROWS * COLUMNS)];  // used, so that every tile is computed
      }
    }
    const double seconds = omp_get_wtime() - start;
    const double products = (double)omp_get_max_threads() * REPEATS * ROWS * COLUMNS * K;
    printf("%-20s %6.1f G products/s (check %.0f)\n", names[variant], products / seconds / 1e9, check);
  }
  return 0;
}
