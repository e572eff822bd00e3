// packed_linear with bf16_inputs: the inputs rounded to bfloat16 (to nearest even, as a Tenstorrent device holds
// activations) and multiplied with AVX512-BF16's vdpbf16ps, which sums two bfloat16 products into each float32 lane
// per instruction: twice the products of a float32 FMA (221 against 112 G products/s on two Zen 4 cores,
// bench/RESULTS.md). Only for weights bfloat16 holds exactly: bf16, and bfp8's and bfp4's values (a code of at most
// 7 significant bits times a power of two).
//
// A work item is one block of rows x one panel, as for float32 products, over k in chunks. A tile of up to 8 rows x
// 48 columns multiplies weight pairs: the 32-bit lane of column c at pair j holds the weights at k = 2j (low half)
// and 2j + 1 (high half), as vdpbf16ps pairs them with the inputs x[2j], x[2j + 1] (one 32-bit broadcast). A block
// of one tile's rows (a decode step) decodes the pairs in registers; a larger one decodes its panel's chunk once
// into a thread's scratch buffer (in L1) and runs its tiles over that. Either way a row's sums are the same (k in
// pairs, in order, from zero; partial sums kept in the output between chunks), so they do not depend on the batch.
// vdpbf16ps treats subnormal inputs as zero and flushes subnormal results, whatever MXCSR says; per Intel's manual
// each lane adds the odd k's product, then the even k's, each rounded as a float32 fused multiply-add (the tests
// check that order bit for bit).
#include "packed_linear_bf16.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "claimed_items.h"

namespace ingot::packed {

#if defined(CPU_CAPABILITY_AVX512)
namespace {

constexpr int kVecs = kPanel / 16;  // 16-lane vectors of a panel's columns
constexpr int kTileRows = 8;  // 24 accumulators of 32 registers
constexpr int64_t kBlockRows = 128;  // rows per work item, as float32 products take them
constexpr int64_t kChunk = 256;  // k per decoded chunk: 128 pairs x 48 columns x 4 bytes = 24 KiB, in L1

// Rows of inputs as bfloat16 pairs over one chunk: row r's pair j is x[r * stride + j].
struct PairInputs {
  const uint32_t* x;
  int64_t stride;  // pairs per row
  int64_t first_row, rows;  // of the output
  int64_t k, depth;  // of the reduction
};

uint32_t* pair_scratch() {
  struct alignas(64) Line {
    uint32_t values[16];
  };
  static thread_local std::vector<Line> lines(kChunk / 2 * kPanel / 16);
  return lines.data()->values;
}

// The weights of records k and k + 1 at ``w`` (k + 1 < depth, else zero) as pairs: a decoded weight is exactly a
// bfloat16, its float32 bits' top half.
template <Format F>
[[gnu::always_inline]] inline void decode_pairs(const uint8_t* w, int64_t k, int64_t depth, __m512i* pairs) {
  constexpr auto vectors = std::make_integer_sequence<int, kVecs>();
  Vec low[kVecs], high[kVecs];
  decode_vectors<F, 0>(w + k * kRecord<F>, low, vectors);
  if (k + 1 < depth) {
    decode_vectors<F, 0>(w + (k + 1) * kRecord<F>, high, vectors);
  } else {
    for (auto& vector : high) vector = Vec(0.f);
  }
  for (int v = 0; v < kVecs; ++v) {
    const __m512i low_halves = _mm512_srli_epi32(_mm512_castps_si512(low[v]), 16);
    pairs[v] = _mm512_mask_blend_epi16(0xAAAAAAAA, low_halves, _mm512_castps_si512(high[v]));
  }
}

// Records [0, depth) at ``w`` decoded into the scratch buffer as pairs.
template <Format F>
const uint32_t* decoded_pairs(const uint8_t* w, int64_t depth) {
  uint32_t* out = pair_scratch();
  for (int64_t k = 0; k < depth; k += 2) {
    __m512i pairs[kVecs];
    decode_pairs<F>(w, k, depth, pairs);
    for (int v = 0; v < kVecs; ++v) _mm512_store_si512(out + k / 2 * kPanel + v * 16, pairs[v]);
  }
  return out;
}

// Rows [row, row + ROWS) of ``in`` x the 48 columns from ``column``, over the chunk at ``w``: its records of format
// F, decoded here, or (DECODED) its pairs in the scratch buffer. The first chunk starts from zero, the others from
// what the output holds; the last adds the bias.
template <Format F, bool DECODED, int ROWS>
[[gnu::target("avx512bf16")]] void pair_tile(const Problem& p, const PairInputs& in, int64_t row, const uint8_t* w,
                                             int64_t column) {
  const bool first = in.k == 0, last = in.k + in.depth == p.K;
  __mmask16 masks[kVecs];
  for (int v = 0; v < kVecs; ++v) {
    const int64_t count = std::clamp<int64_t>(p.N - column - v * 16, 0, 16);
    masks[v] = static_cast<__mmask16>((1u << count) - 1);
  }
  float* y = p.y + (in.first_row + row) * p.N + column;
  __m512 acc[ROWS][kVecs];
  for (int r = 0; r < ROWS; ++r)
    for (int v = 0; v < kVecs; ++v)
      acc[r][v] = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(masks[v], y + r * p.N + v * 16);
  const uint32_t* x = in.x + row * in.stride;
  const int64_t pairs = (in.depth + 1) / 2;
  for (int64_t j = 0; j < pairs; ++j) {
    __m512i weights[kVecs];
    if constexpr (DECODED) {
      for (int v = 0; v < kVecs; ++v) weights[v] = _mm512_load_si512(w + (j * kPanel + v * 16) * sizeof(uint32_t));
    } else {
      decode_pairs<F>(w, 2 * j, in.depth, weights);
    }
    for (int r = 0; r < ROWS; ++r) {
      const __m512bh value = (__m512bh)_mm512_set1_epi32(static_cast<int>(x[r * in.stride + j]));
      for (int v = 0; v < kVecs; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], value, (__m512bh)weights[v]);
    }
  }
  for (int v = 0; v < kVecs; ++v) {
    if (last && p.bias) {
      const __m512 bias = _mm512_maskz_loadu_ps(masks[v], p.bias + column + v * 16);
      for (int r = 0; r < ROWS; ++r) acc[r][v] = _mm512_add_ps(acc[r][v], bias);
    }
    for (int r = 0; r < ROWS; ++r) _mm512_mask_storeu_ps(y + r * p.N + v * 16, masks[v], acc[r][v]);
  }
}

// All rows of ``in`` over one chunk at ``w`` (as for pair_tile).
template <Format F, bool DECODED, int... Remainder>
void pair_tiles(const Problem& p, const PairInputs& in, const uint8_t* w, int64_t column,
                std::integer_sequence<int, Remainder...>) {
  int64_t row = 0;
  for (; row + kTileRows <= in.rows; row += kTileRows) pair_tile<F, DECODED, kTileRows>(p, in, row, w, column);
  const int64_t left = in.rows - row;
  ((left == Remainder + 1 ? pair_tile<F, DECODED, Remainder + 1>(p, in, row, w, column) : void()), ...);
}

template <Format F>
void pair_product(const Problem& p, const uint32_t* x, int64_t stride, int64_t panels) {
  const int64_t row_blocks = (p.rows + kBlockRows - 1) / kBlockRows;
  ingot::for_each_claimed(row_blocks * panels, [&](int64_t item, int64_t /*next*/) {
    const int64_t index = item % panels, first_row = item / panels * kBlockRows;
    const int64_t rows = std::min(kBlockRows, p.rows - first_row);
    for (int64_t k = 0; k < p.K; k += kChunk) {
      const int64_t depth = std::min(kChunk, p.K - k);
      const uint8_t* w = p.w + (index * p.K + k) * kRecord<F>;
      const PairInputs in{x + first_row * stride + k / 2, stride, first_row, rows, k, depth};
      constexpr auto remainders = std::make_integer_sequence<int, kTileRows - 1>();
      if (rows <= kTileRows) {  // one tile: each weight decoded once, in registers
        pair_tiles<F, false>(p, in, w, index * kPanel, remainders);
      } else {
        const auto* pairs = reinterpret_cast<const uint8_t*>(decoded_pairs<F>(w, depth));
        pair_tiles<F, true>(p, in, pairs, index * kPanel, remainders);
      }
    }
  });
}

// Row ``in`` [K] of float32 inputs as bfloat16 pairs at ``out``, rounded to nearest even (subnormals to zero, as
// vdpbf16ps would take them anyway); an odd K's last pair gets a zero input.
[[gnu::target("avx512bf16")]] void round_row(const float* in, int64_t K, uint16_t* out) {
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    const auto rounded = (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(in + k));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + k), rounded);
  }
  if (k < K) {
    const auto mask = static_cast<__mmask16>((1u << (K - k)) - 1);
    _mm256_mask_storeu_epi16(out + k, mask, (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mask, in + k)));
  }
  if (K % 2) out[K] = 0;
}

// Rows [rows, K] of float32 ``x`` as pairs [rows, (K + 1) / 2]. Converted here rather than by a tensor op: a decode
// step calls the op some 150 times on a few rows, where ATen's dispatch would cost more than the conversion.
void round_inputs(const float* x, int64_t rows, int64_t K, uint32_t* out) {
  const int64_t stride = (K + 1) / 2;
  const int64_t grain = std::max<int64_t>(1, (1 << 16) / std::max<int64_t>(K, 1));  // rows: 64 Ki values a thread
  at::parallel_for(0, rows, grain, [&](int64_t first, int64_t last) {
    for (int64_t r = first; r < last; ++r) round_row(x + r * K, K, reinterpret_cast<uint16_t*>(out + r * stride));
  });
}

}  // namespace

bool bf16_products_supported() { return __builtin_cpu_supports("avx512bf16"); }

void bf16_product(const Problem& p, int64_t panels, Format format) {
  const int64_t stride = (p.K + 1) / 2;
  static thread_local std::vector<uint32_t> pairs;  // the caller's; its threads only read it
  pairs.resize(p.rows * stride);
  round_inputs(p.x, p.rows, p.K, pairs.data());
  switch (format) {
    case Format::kBf16: pair_product<Format::kBf16>(p, pairs.data(), stride, panels); break;
    case Format::kBfp8: pair_product<Format::kBfp8>(p, pairs.data(), stride, panels); break;
    case Format::kBfp4: pair_product<Format::kBfp4>(p, pairs.data(), stride, panels); break;
    case Format::kFp32: TORCH_CHECK(false, "packed_linear: bf16_inputs needs a weight format bfloat16 holds exactly");
  }
}
#else
bool bf16_products_supported() { return false; }

void bf16_product(const Problem&, int64_t, Format) {
  TORCH_CHECK(false, "packed_linear: bf16_inputs needs ingot's AVX-512 build");
}
#endif

}  // namespace ingot::packed
