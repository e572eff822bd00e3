// This machine's float32 FMA peak with AVX2: every thread runs 12 independent chains of 8-lane fused multiply-adds
// (enough to cover the FMA's latency on two FMA units), all threads at once. What a compute-bound step (prefill, a
// 32-row decode step) is measured against in bench/RESULTS.md: the clock under load, not the CPU's base clock.
//
//     gcc -O2 -mavx2 -mfma -fopenmp bench/fma_peak.c -o /tmp/fma_peak && OMP_NUM_THREADS=2 /tmp/fma_peak
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>

#define STEPS 200000000L
#define CHAIN(a) a = _mm256_fmadd_ps(a, scale, offset);

int main(void) {
  double start = omp_get_wtime(), sum = 0;
#pragma omp parallel reduction(+ : sum)
  {
    const __m256 scale = _mm256_set1_ps(0.999f), offset = _mm256_set1_ps(0.001f);
    // distinct starting values: chains that start equal would be computed once
    __m256 a0 = _mm256_set1_ps(1), a1 = _mm256_set1_ps(2), a2 = _mm256_set1_ps(3), a3 = _mm256_set1_ps(4);
    __m256 a4 = _mm256_set1_ps(5), a5 = _mm256_set1_ps(6), a6 = _mm256_set1_ps(7), a7 = _mm256_set1_ps(8);
    __m256 a8 = _mm256_set1_ps(9), a9 = _mm256_set1_ps(10), a10 = _mm256_set1_ps(11), a11 = _mm256_set1_ps(12);
    for (long i = 0; i < STEPS; ++i) {
      CHAIN(a0) CHAIN(a1) CHAIN(a2) CHAIN(a3) CHAIN(a4) CHAIN(a5) CHAIN(a6) CHAIN(a7) CHAIN(a8) CHAIN(a9) CHAIN(a10) CHAIN(a11)
    }
    __m256 total = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                                 _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)));
    total = _mm256_add_ps(total, _mm256_add_ps(_mm256_add_ps(a8, a9), _mm256_add_ps(a10, a11)));
    float lanes[8];
    _mm256_storeu_ps(lanes, total);
    sum += lanes[0];  // used, so that the chains are computed
  }
  const double seconds = omp_get_wtime() - start;
  const int threads = omp_get_max_threads();
  printf("%d threads: %.1f GFLOP/s float32 FMA (check %.0f)\n", threads, threads * 12.0 * 16 * STEPS / seconds / 1e9, sum);
  return 0;
}
