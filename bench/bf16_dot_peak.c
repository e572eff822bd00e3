// This machine's peak products per second with AVX-512: float32 FMAs (16 products an instruction) against
// AVX512-BF16's vdpbf16ps (32 bfloat16 products, summed in pairs into 16 float32 lanes). Every thread runs 12
// independent chains of one or the other (enough to cover either's latency), all threads at once. What
// packed_linear's bf16_inputs (--activation-dtype bf16) can gain over its float32 products at most.
//
//     gcc -O3 -funroll-all-loops -march=x86-64-v4 -mavx512bf16 -fopenmp bench/bf16_dot_peak.c -o /tmp/bf16_dot_peak
//     OMP_NUM_THREADS=2 /tmp/bf16_dot_peak && OMP_NUM_THREADS=2 /tmp/bf16_dot_peak bf16
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>

#define STEPS 100000000L
#define CHAINS 12

int main(int argc, char** argv) {
  const int bf16 = argc > 1 && strcmp(argv[1], "bf16") == 0;
  double start = omp_get_wtime(), sum = 0;
#pragma omp parallel reduction(+ : sum)
  {
    __m512 chains[CHAINS];
    for (int i = 0; i < CHAINS; ++i) chains[i] = _mm512_set1_ps(i);  // distinct: equal chains would be computed once
    const __m512 scale = _mm512_set1_ps(0.999f), offset = _mm512_set1_ps(0.001f);
    const __m512bh a = (__m512bh)_mm512_set1_epi32(0x3f7f3f7f), b = (__m512bh)_mm512_set1_epi32(0x3a833a83);
    if (bf16) {
      for (long step = 0; step < STEPS; ++step)
        for (int i = 0; i < CHAINS; ++i) chains[i] = _mm512_dpbf16_ps(chains[i], a, b);
    } else {
      for (long step = 0; step < STEPS; ++step)
        for (int i = 0; i < CHAINS; ++i) chains[i] = _mm512_fmadd_ps(chains[i], scale, offset);
    }
    __m512 total = chains[0];
    for (int i = 1; i < CHAINS; ++i) total = _mm512_add_ps(total, chains[i]);
    sum += _mm512_reduce_add_ps(total);  // used, so that the chains are computed
  }
  const double seconds = omp_get_wtime() - start;
  const int threads = omp_get_max_threads();
  const double products = threads * (double)CHAINS * (bf16 ? 32 : 16) * STEPS;
  printf("%d threads: %.1f G products/s with %s (check %.0f)\n", threads, products / seconds / 1e9,
         bf16 ? "vdpbf16ps" : "float32 FMA", sum);
  return 0;
}
