// ingot::packed_linear: y = x W^T (+ bias) on a weight packed at compile time, for the few rows of a decode step
// and the many of a prefill step alike, so that every program of an artifact reads one copy of the weights.
// oneDNN's GEMM is built for large products; at 1-32 rows a step's products are a stream of weights through a
// handful of rows, and oneDNN leaves much of that stream's bandwidth and the FMA units idle. Here the weight is
// packed as [N/48][K][48] (panels of 48 columns, each one contiguous stream), and one tile keeps up to 8 rows x
// 48 columns of outputs in registers (AVX-512; with AVX2 4 x 24, or 1 x 48 for a single row): per k it loads the
// tile's weight vectors and broadcasts one input value per row, while the tiles fetch the next chunk of weights
// into L2 between them.
//
// The work is cut so that both operands come from cache at any row count: k in blocks of kDepth (a panel's chunk
// then stays in L2 while every tile of the rows goes over it, even for the 8192-wide inputs of a 1B model's down
// projection; tiles accumulate into the output between k blocks), rows in blocks of kBlockRows (a block's inputs
// stay in L2 while a thread goes from one panel to the next). A work item is one row block x one panel over all
// of k; threads take three quarters of the items in even shares and claim the rest one at a time (see
// claimed_items.h). A decode step is one row block: its items are the panels, each streamed from memory once.
// bench/packed_linear.py compares it with oneDNN on its own prepacked weights, at decode and prefill row counts.
//
// The weight may be stored in one of Tenstorrent's formats instead of float32 (the bits a Tenstorrent device
// would hold, ingot/compile/tt/formats.py), read as stored: no float32 copy. A panel's 48 columns at one k are
// one record, and at every k they are exactly three of Tenstorrent's blocks (16 consecutive output features
// sharing an exponent, as it stores a linear's weight transposed). Records, by format:
//   fp32: 48 floats;  bf16: 48 bfloat16 (the top half of a float's bits);
//   bfp8: 48 signed codes (int8, -127..127), then the 3 blocks' shared exponents (a float's biased exponent field);
//         a weight is code * 2^(exponent - 127 - 6);
//   bfp4: 24 bytes of signed 4-bit codes (two's complement, -7..7), block b's 8 bytes from byte 8b: value i of a
//         block is nibble i / 2 of the block's 32-bit word i % 2 (little-endian; nibble n is bits 4n to 4n + 3),
//         so that one 8-byte load broadcast to every lane holds each lane's code at a shift of its own; then the
//         3 exponents; a weight is code * 2^(exponent - 127 - 2).
// Decoding is exact: the code converted to float32 and scaled by a power of two (AVX-512's scalef; AVX2
// multiplies by two, each product a normal float). AVX-512 decodes a bfp4 block by lookup instead: each lane's
// nibble moved to the bottom of its lane (a shift) picks its weight (a permute) from the block's 16 possible
// weights, read from a table of them by exponent byte (kBfp4Weights, 16 KiB: every code times 2^(e - bias),
// exactly the value scalef gives). Per 16 weights at one row that is a shift, a permute with its table operand in
// memory and the FMA; scaling the 16 codes with scalef per block took a fourth vector instruction and made decode
// steps ~8% slower. A bfp8 block takes a sign extension, a conversion, a scalef and the FMA. Scaling the broadcast
// input by the block's power of two instead (fma(code, x * 2^e, acc): the same bits while x * 2^e is exact) saves no
// instruction at one row (a scalef, or an integer add to x's exponent field, per block in place of the codes'
// scalef) and measured 0.93-0.98x the time of one row's products (alternating, on a shared machine), short of paying
// for the check that x * 2^e is exact; computing the scaled inputs of a panel's chunk ahead (its exponents gathered
// 16 at a time, or read one by one) cost more than the scalefs it saves (1.04-1.08x and 1.2-1.4x the time), and
// decoding the next record ahead of the FMAs was slower too. At one row the products run near the machine's memory
// rate already: ~35 G weights/s on two cores from L2, ~29-41 GB/s of bfp8 records from memory.
// Decode steps (a row block of at most one tile's rows) decode in registers, so a step reads the format's bytes
// from memory and nothing else: bfp8 is 3.8x fewer bytes than fp32, bfp4 7.1x. A larger row block would decode
// each weight once per tile, so it decodes its panel's chunk once into a float32 scratch buffer (in L2) and runs
// the float32 tiles on it.
//
// A tied embedding reads its rows from the LM head's panels (packed_rows): a row is one column of a panel, one
// value a record, so its values lie a record apart over the panel's whole length. Written as tensor ops, inductor
// inlined that gather into every consumer (the first layer's norm and residual adds: three kernels of a decode
// step), each reading the row again, value by value, from K cache lines of a weight last read a step before: ~0.2
// ms each in a SmolLM2 bfp8 decode step, half the step's time outside the products and attention. The op fetches
// the row's records once, all at once, then decodes them (that time fell from ~1.2 to ~0.65 ms at one thread).
//
// Every row is summed in the same order however many rows the step has, so a sequence's logits do not depend on
// what else is in the batch: a tile sums k in order, one fused multiply-add per k, from zero, and a partial sum
// stored to the output between k blocks and loaded again keeps its bits; so neither the blocks nor the tile a
// row falls in change its result. The weights a tile multiplies are the same floats whether decoded in registers
// or read from the scratch buffer.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
#include <immintrin.h>
#endif

#include "claimed_items.h"
#include "register_once.h"

namespace {

using Vec = at::vec::Vectorized<float>;
constexpr int64_t kPanel = 48;  // output columns per packed panel (the layout, whatever the vector width)
constexpr int kTileVecs = 3;  // vectors of columns per tile: a whole panel with AVX-512, half of one with AVX2
constexpr int kTileRows = Vec::size() == 16 ? 8 : 4;  // 24 accumulators with AVX-512 (of 32 registers), 12 with AVX2
constexpr int kPanelParts = kPanel / (kTileVecs * Vec::size());
constexpr int64_t kDepth = 1024;  // k per block: a panel's float32 chunk is 192 KiB, in L2 beside the rows' inputs
constexpr int64_t kBlockRows = 128;  // rows per work item: their inputs over a k block are 512 KiB
// k per block when a decode step of 9-32 rows decodes a compressed panel into the scratch buffer: a 24 KiB float32
// chunk stays in L1 while the step's tiles go over it (8-13% faster at 12-24 rows of a 1B model, the same at 32;
// slower for prefill's row blocks, whose partial sums it would store and reload 8 times as often).
constexpr int64_t kScratchDepth = 128;
constexpr int64_t kScratchDepthMaxRows = 32;
constexpr int kBlock = 16;  // weights sharing one exponent in the block formats

enum class Format { kFp32, kBf16, kBfp8, kBfp4 };

// Bytes of one record (a panel's 48 columns at one k).
template <Format F>
constexpr int64_t kRecord = F == Format::kFp32 ? 192 : F == Format::kBf16 ? 96 : F == Format::kBfp8 ? 51 : 27;

// A block format's exponent offset: a weight is code * 2^(exponent - kExponentBias).
template <Format F>
constexpr int kExponentBias = F == Format::kBfp8 ? 127 + 6 : 127 + 2;

// Where a block format's exponents start in a record.
template <Format F>
constexpr int kExponents = F == Format::kBfp8 ? kPanel : kPanel / 2;

// The bfp4 code of value ``i`` of the block at ``block``: nibble i / 2 of word i % 2, moved to the top of an int32
// and back down with its sign.
inline int32_t bfp4_code(const uint8_t* block, int i) {
  uint32_t word;
  std::memcpy(&word, block + 4 * (i % 2), sizeof word);
  return static_cast<int32_t>(word << (28 - 4 * (i / 2))) >> 28;
}

// The weight of column ``column`` in ``record``, one at a time: for CPUs without the vector paths below.
template <Format F>
float weight_at(const uint8_t* record, int column) {
  uint32_t bits;
  if constexpr (F == Format::kFp32) {
    std::memcpy(&bits, record + column * sizeof(float), sizeof bits);
  } else if constexpr (F == Format::kBf16) {
    uint16_t half;
    std::memcpy(&half, record + column * 2, sizeof half);
    bits = uint32_t{half} << 16;
  } else {
    const int32_t code = F == Format::kBfp8 ? static_cast<int8_t>(record[column])
                                             : bfp4_code(record + column / kBlock * 8, column % kBlock);
    if (code == 0) return 0.f;
    const float value = static_cast<float>(code);
    std::memcpy(&bits, &value, sizeof bits);
    bits += static_cast<uint32_t>(record[kExponents<F> + column / kBlock] - kExponentBias<F>) * (1u << 23);
  }
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

constexpr float kInfinity = std::numeric_limits<float>::infinity();

// 2^n as a float (exact for n from -149 to 127).
constexpr float power_of_two(int n) {
  double value = 1;
  for (; n > 0; --n) value *= 2;
  for (; n < 0; ++n) value /= 2;
  return static_cast<float>(value);
}

#if defined(CPU_CAPABILITY_AVX512)
// By exponent byte, the power of two that scales a block format's codes (for scalef, which takes it as a float and
// handles a zero code and any exponent exactly).
template <Format F>
struct ScaleTable {
  float values[256];
  constexpr ScaleTable() : values() {
    for (int e = 0; e < 256; ++e) values[e] = static_cast<float>(e - kExponentBias<F>);
  }
};
template <Format F>
constexpr ScaleTable<F> kScales{};

template <Format F>
[[gnu::always_inline]] inline Vec scaled(__m512 codes, uint8_t exponent) {
  return _mm512_scalef_ps(codes, _mm512_set1_ps(kScales<F>.values[exponent]));
}

// By exponent byte, a bfp4 block's 16 possible weights in the order of their nibbles (codes 0 to 7, then -8 to -1),
// each exact: the table a lane's nibble picks its weight from.
struct Bfp4Weights {
  alignas(64) float values[256][16];
  constexpr Bfp4Weights() : values() {
    for (int e = 0; e < 256; ++e) {
      const double scale = power_of_two(e - kExponentBias<Format::kBfp4>);
      for (int nibble = 0; nibble < 16; ++nibble) {
        const double value = (nibble < 8 ? nibble : nibble - 16) * scale;  // exact; beyond float32's range: infinite
        values[e][nibble] = value >= 0x1p128 ? kInfinity : value <= -0x1p128 ? -kInfinity : static_cast<float>(value);
      }
    }
  }
};
constexpr Bfp4Weights kBfp4Weights{};
#elif defined(CPU_CAPABILITY_AVX2)

// The smallest power of two AVX2 scales codes by in one multiply: below it a single factor would be subnormal
// (AVX2 has no scalef), so tiny blocks take two factors, each a normal float, and so is a code times the first.
constexpr int kMinScale = -100;

// By exponent byte, two powers of two whose product scales a block format's decoded codes.
template <Format F>
struct ScaleTables {
  float first[256], second[256];
  constexpr ScaleTables() : first(), second() {
    for (int e = 0; e < 256; ++e) {
      const int total = e - kExponentBias<F>, part = total < kMinScale ? kMinScale : total;
      first[e] = power_of_two(part);
      second[e] = power_of_two(total - part);
    }
  }
};
template <Format F>
constexpr ScaleTables<F> kScales{};

// Codes (int32 lanes) times 2^(exponent - bias), exactly: every product is a normal float. One multiply unless the
// block is tiny (its second factor is 1 otherwise): a predictable branch costs less than the multiply.
template <Format F>
[[gnu::always_inline]] inline Vec scaled(__m256i codes, uint8_t exponent) {
  const __m256 first = _mm256_mul_ps(_mm256_cvtepi32_ps(codes), _mm256_set1_ps(kScales<F>.first[exponent]));
  if (__builtin_expect(exponent >= kExponentBias<F> + kMinScale, 1)) return first;
  return _mm256_mul_ps(first, _mm256_set1_ps(kScales<F>.second[exponent]));
}
#endif

// Vec::size() weights of ``record`` from column COLUMN (a multiple of Vec::size()), as float32. Always inlined, as
// are decode_vectors and scaled: GCC's AVX2 build left bfp8's and bfp4's decode_vectors out of line, a call per k
// that stored the weights and loaded them again, and decoded a row's products at a third of the speed.
template <Format F, int COLUMN>
[[gnu::always_inline]] inline Vec decode(const uint8_t* record) {
  [[maybe_unused]] constexpr int block = COLUMN / kBlock;
  if constexpr (F == Format::kFp32) {
    return Vec::loadu(reinterpret_cast<const float*>(record) + COLUMN);
#if defined(CPU_CAPABILITY_AVX512)
  } else if constexpr (F == Format::kBf16) {
    const __m256i halves = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(record + 2 * COLUMN));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(halves), 16));
  } else if constexpr (F == Format::kBfp8) {
    const __m128i codes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(record + COLUMN));
    return scaled<F>(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(codes)), record[kExponents<F> + block]);
  } else {
    // Each lane's nibble moved to the bottom of its 32-bit lane (the bits above it are the permute's to ignore),
    // then looked up among the block's 16 weights: the 16 codes scaled at once.
    int64_t words;
    std::memcpy(&words, record + 8 * block, sizeof words);
    const __m512i shifts = _mm512_setr_epi32(0, 0, 4, 4, 8, 8, 12, 12, 16, 16, 20, 20, 24, 24, 28, 28);
    const __m512i nibbles = _mm512_srlv_epi32(_mm512_set1_epi64(words), shifts);
    return _mm512_permutexvar_ps(nibbles, _mm512_load_ps(kBfp4Weights.values[record[kExponents<F> + block]]));
  }
#elif defined(CPU_CAPABILITY_AVX2)
  } else if constexpr (F == Format::kBf16) {
    const __m128i halves = _mm_loadu_si128(reinterpret_cast<const __m128i*>(record + 2 * COLUMN));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(halves), 16));
  } else if constexpr (F == Format::kBfp8) {
    const __m128i codes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(record + COLUMN));
    return scaled<F>(_mm256_cvtepi8_epi32(codes), record[kExponents<F> + block]);
  } else {
    int64_t words;
    std::memcpy(&words, record + 8 * block, sizeof words);
    constexpr int n = COLUMN % kBlock / 2;  // the first lane's nibble
    const __m256i shifts = _mm256_setr_epi32(28 - 4 * n, 28 - 4 * n, 24 - 4 * n, 24 - 4 * n, 20 - 4 * n,
                                             20 - 4 * n, 16 - 4 * n, 16 - 4 * n);
    // each lane's nibble to the top of its int32 and back down with its sign (as bfp4_code)
    const __m256i codes = _mm256_srai_epi32(_mm256_sllv_epi32(_mm256_set1_epi64x(words), shifts), 28);
    return scaled<F>(codes, record[kExponents<F> + block]);
  }
#else
  } else {
    float values[Vec::size()];
    for (int i = 0; i < Vec::size(); ++i) values[i] = weight_at<F>(record, COLUMN + i);
    return Vec::loadu(values);
  }
#endif
}

// Vectors V of ``record`` from column FIRST on.
template <Format F, int FIRST, int... V>
[[gnu::always_inline]] inline void decode_vectors(const uint8_t* record, Vec* out, std::integer_sequence<int, V...>) {
  ((out[V] = decode<F, FIRST + V * Vec::size()>(record)), ...);
}

struct Problem {
  const float* x;  // [M, K]
  const uint8_t* w;  // [P, K, record]
  const float* bias;  // [N] or null
  float* y;  // [M, N]
  int64_t rows, K, N;
};

// Inputs of a run of rows over a range of k: row r's value at k is x[r * stride + k], k from 0 to depth.
struct Inputs {
  const float* x;
  int64_t stride;
  int64_t first_row, rows;  // of the output
  int64_t k, depth;  // of the reduction
};

// Cache lines for the tiles over one panel's k range to fetch into L2, spread evenly over them.
struct Fetch {
  const char* from;
  int64_t lines;
};

// Rows [row, row + ROWS) of ``in`` x VECS vectors of columns from part PART of the panel whose chunk (its records
// over the k range of ``in``) is at ``w``, ``column`` the part's first column of the output, fetching ``fetch``
// with FETCH.
// The first k range starts from zero, the others from what the output holds; the last adds the bias. Template
// parameters, so that tiles without them keep their loop as tight as can be (the same code with a runtime switch
// ran 1.5x slower).
template <Format F, int PART, int ROWS, bool FETCH, int VECS = kTileVecs>
void tile(const Problem& p, const Inputs& in, int64_t row, const uint8_t* w, int64_t column, Fetch fetch) {
  const bool first = in.k == 0, last = in.k + in.depth == p.K;
  int64_t counts[VECS];
  for (int v = 0; v < VECS; ++v) counts[v] = std::clamp<int64_t>(p.N - column - v * Vec::size(), 0, Vec::size());
  float* y = p.y + (in.first_row + row) * p.N + column;
  Vec acc[ROWS][VECS];
  for (int r = 0; r < ROWS; ++r)
    for (int v = 0; v < VECS; ++v)
      acc[r][v] = first || counts[v] == 0 ? Vec(0.f) : Vec::loadu(y + r * p.N + v * Vec::size(), counts[v]);
  const float* x = in.x + row * in.stride;
  int64_t due = 0;
  for (int64_t k = 0; k < in.depth; ++k) {
    if constexpr (FETCH) {
      for (due += fetch.lines; due >= in.depth; due -= in.depth, fetch.from += 64) __builtin_prefetch(fetch.from, 0, 2);
    }
    Vec weights[VECS];
    decode_vectors<F, PART * kTileVecs * Vec::size()>(w + k * kRecord<F>, weights,
                                                      std::make_integer_sequence<int, VECS>());
    for (int r = 0; r < ROWS; ++r) {
      const Vec value(x[r * in.stride + k]);
      for (int v = 0; v < VECS; ++v) acc[r][v] = at::vec::fmadd(value, weights[v], acc[r][v]);
    }
  }
  for (int v = 0; v < VECS; ++v) {
    if (counts[v] == 0) break;
    if (last && p.bias) {
      const Vec bias = Vec::loadu(p.bias + column + v * Vec::size(), counts[v]);
      for (int r = 0; r < ROWS; ++r) acc[r][v] = acc[r][v] + bias;
    }
    for (int r = 0; r < ROWS; ++r) acc[r][v].store(y + r * p.N + v * Vec::size(), counts[v]);
  }
}

// The next tile's share of the lines to fetch, when ``tiles`` tiles share them.
struct Shares {
  Fetch next;
  int64_t tiles, done = 0;
  Fetch operator()() {
    const int64_t from = done * next.lines / tiles, to = ++done * next.lines / tiles;
    return Fetch{next.from + from * 64, to - from};
  }
};

// All rows of ``in`` x part PART of a panel.
template <Format F, int PART, int... Remainder>
void part(const Problem& p, const Inputs& in, const uint8_t* w, int64_t column, Shares& shares,
          std::integer_sequence<int, Remainder...>) {
  const bool fetching = shares.next.from != nullptr;
  int64_t row = 0;
  for (; row + kTileRows <= in.rows; row += kTileRows) {
    if (fetching) tile<F, PART, kTileRows, true>(p, in, row, w, column, shares());
    else tile<F, PART, kTileRows, false>(p, in, row, w, column, {});
  }
  const int64_t left = in.rows - row;
  if (fetching)
    ((left == Remainder + 1 ? tile<F, PART, Remainder + 1, true>(p, in, row, w, column, shares()) : void()), ...);
  else
    ((left == Remainder + 1 ? tile<F, PART, Remainder + 1, false>(p, in, row, w, column, {}) : void()), ...);
}

constexpr auto kRemainders = std::make_integer_sequence<int, kTileRows - 1>();  // 1 to kTileRows - 1 rows

// All rows of ``in`` over the chunk of panel ``index`` at ``w`` (records of format F): the chunk comes from memory
// once, then from cache. The tiles fetch the next chunk (``next``, null at a thread's last) between them, each an
// equal share, so that the stream from memory overlaps the arithmetic at an even pace (without it the kernel only
// matched oneDNN at 16-32 rows).
//
// One row with AVX2 is a tile of the whole panel (6 vectors): 6 independent chains of FMAs per k, where half a
// panel's 3 chains each waited out the FMA's latency at every k (a row's bfp8 products 8% slower, bfp4's 15%, on
// Zen 3). Each output still sums k in order: the same bits.
template <Format F>
void tiles(const Problem& p, const Inputs& in, int64_t index, const uint8_t* w, Fetch next) {
  if constexpr (kPanelParts == 2) {
    if (in.rows == 1) {
      if (next.from != nullptr) tile<F, 0, 1, true, 2 * kTileVecs>(p, in, 0, w, index * kPanel, next);
      else tile<F, 0, 1, false, 2 * kTileVecs>(p, in, 0, w, index * kPanel, {});
      return;
    }
  }
  Shares shares{next, kPanelParts * ((in.rows + kTileRows - 1) / kTileRows)};
  part<F, 0>(p, in, w, index * kPanel, shares, kRemainders);
  if constexpr (kPanelParts == 2) {
    const int64_t column = index * kPanel + kTileVecs * Vec::size();
    if (column < p.N) part<F, 1>(p, in, w, column, shares, kRemainders);
  }
}

// A thread's buffer for one chunk of a panel decoded to float32.
float* scratch() {
  struct alignas(64) Line {
    float values[16];
  };
  static thread_local std::vector<Line> lines(kDepth * kPanel / 16);
  return lines.data()->values;
}

// ``depth`` records of format F from ``w``, decoded into the thread's scratch buffer as float32 records.
template <Format F>
const uint8_t* decoded(const uint8_t* w, int64_t depth) {
  float* out = scratch();
  constexpr auto vectors = std::make_integer_sequence<int, static_cast<int>(kPanel / Vec::size())>();
  for (int64_t k = 0; k < depth; ++k) {
    Vec record[kPanel / Vec::size()];
    decode_vectors<F, 0>(w + k * kRecord<F>, record, vectors);
    for (int v = 0; v < kPanel / Vec::size(); ++v) record[v].store(out + k * kPanel + v * Vec::size());
  }
  return reinterpret_cast<const uint8_t*>(out);
}

// A panel's chunk over k range [k, k + depth), for fetching.
template <Format F>
Fetch chunk(const Problem& p, int64_t index, int64_t k, int64_t depth) {
  const int64_t bytes = std::min(depth, p.K - k) * kRecord<F>;
  return {reinterpret_cast<const char*>(p.w + (index * p.K + k) * kRecord<F>), (bytes + 63) / 64};
}

// Work items of a block of rows x one panel, each over all of k in blocks; a thread's consecutive items take the
// same rows (from L2) to the next panel.
template <Format F>
void product(const Problem& p, int64_t panels) {
  const int64_t row_blocks = (p.rows + kBlockRows - 1) / kBlockRows;
  ingot::for_each_claimed(row_blocks * panels, [&](int64_t item, int64_t next_item) {
    const int64_t index = item % panels, first_row = item / panels * kBlockRows;
    const int64_t rows = std::min(kBlockRows, p.rows - first_row);
    const bool few_rows = F != Format::kFp32 && rows > kTileRows && p.rows <= kScratchDepthMaxRows;
    const int64_t depth = few_rows ? kScratchDepth : kDepth;
    for (int64_t k = 0; k < p.K; k += depth) {
      const Fetch next = k + depth < p.K ? chunk<F>(p, index, k + depth, depth)
                         : next_item >= 0 ? chunk<F>(p, next_item % panels, 0, depth)
                                          : Fetch{nullptr, 0};
      const Inputs in{p.x + first_row * p.K + k, p.K, first_row, rows, k, std::min(depth, p.K - k)};
      const uint8_t* w = p.w + (index * p.K + k) * kRecord<F>;
      if constexpr (F != Format::kFp32) {
        if (rows > kTileRows) {
          tiles<Format::kFp32>(p, in, index, decoded<F>(w, in.depth), next);
          continue;
        }
      }
      tiles<F>(p, in, index, w, next);
    }
  });
}

// Where, in a record, the bytes of column ``column``'s value lie (its code, or its bits) and its block's exponent.
template <Format F>
std::pair<int64_t, int64_t> value_bytes(int column) {
  if constexpr (F == Format::kFp32) return {4 * column, 4 * column};
  else if constexpr (F == Format::kBf16) return {2 * column, 2 * column};
  else if constexpr (F == Format::kBfp8) return {column, kExponents<F> + column / kBlock};
  else return {column / kBlock * 8, kExponents<F> + column / kBlock};
}

// Rows ``ids`` (each below the panels' columns) of the float32 weight packed at ``w`` [panels, K, record], into
// ``out`` [count, K]: each row's K records fetched first (K cache lines apart: fetched one by one, they would
// come from memory one at a time), then decoded.
template <Format F>
void gather_rows(const uint8_t* w, const int64_t* ids, int64_t count, int64_t K, float* out) {
  at::parallel_for(0, count, 1, [&](int64_t first, int64_t last) {
    for (int64_t i = first; i < last; ++i) {
      const uint8_t* panel = w + ids[i] / kPanel * K * kRecord<F>;
      const int column = static_cast<int>(ids[i] % kPanel);
      const auto [value, exponent] = value_bytes<F>(column);
      for (int64_t k = 0; k < K; ++k) {
        __builtin_prefetch(panel + k * kRecord<F> + value, 0, 0);
        __builtin_prefetch(panel + k * kRecord<F> + exponent, 0, 0);
      }
      for (int64_t k = 0; k < K; ++k) out[i * K + k] = weight_at<F>(panel + k * kRecord<F>, column);
    }
  });
}

// The format named ``name``, with the element type and last dimension of its packed weight.
struct FormatSpec {
  Format format;
  at::ScalarType dtype;
  int64_t record_elements;
};

FormatSpec format_spec(std::string_view name) {
  if (name == "fp32") return {Format::kFp32, at::kFloat, kPanel};
  if (name == "bf16") return {Format::kBf16, at::kBFloat16, kPanel};
  if (name == "bfp8") return {Format::kBfp8, at::kByte, kRecord<Format::kBfp8>};
  if (name == "bfp4") return {Format::kBfp4, at::kByte, kRecord<Format::kBfp4>};
  TORCH_CHECK(false, "packed_linear: unknown weight format ", name, " (fp32, bf16, bfp8 or bfp4)");
}

}  // namespace

// input [..., K]; packed_weight [ceil(N / 48), K, record] in ``format`` (see above), zero past column N;
// bias [N] or none -> [..., N]
at::Tensor packed_linear(const at::Tensor& input, const at::Tensor& packed_weight, int64_t out_features,
                         const std::optional<at::Tensor>& bias, std::string_view format) {
  const FormatSpec spec = format_spec(format);
  TORCH_CHECK(input.scalar_type() == at::kFloat, "packed_linear: float32 inputs only");
  TORCH_CHECK(packed_weight.scalar_type() == spec.dtype && packed_weight.dim() == 3 &&
                  packed_weight.size(2) == spec.record_elements && packed_weight.is_contiguous(),
              "packed_linear: the weight is not packed in format ", format);
  const int64_t K = packed_weight.size(1), N = out_features;
  TORCH_CHECK(input.size(-1) == K && packed_weight.size(0) * kPanel >= N, "packed_linear: shapes disagree");
  const auto x = input.contiguous();
  const auto b = bias.has_value() ? bias->contiguous() : at::Tensor();
  TORCH_CHECK(!b.defined() || (b.numel() == N && b.scalar_type() == at::kFloat), "packed_linear: bad bias");
  auto sizes = input.sizes().vec();
  sizes.back() = N;
  auto y = at::empty(sizes, x.options());
  const Problem p{x.data_ptr<float>(), static_cast<const uint8_t*>(packed_weight.const_data_ptr()),
                  b.defined() ? b.data_ptr<float>() : nullptr, y.data_ptr<float>(), x.numel() / K, K, N};
  if (p.rows == 0) return y;
  const int64_t panels = packed_weight.size(0);
  switch (spec.format) {
    case Format::kFp32: product<Format::kFp32>(p, panels); break;
    case Format::kBf16: product<Format::kBf16>(p, panels); break;
    case Format::kBfp8: product<Format::kBfp8>(p, panels); break;
    case Format::kBfp4: product<Format::kBfp4>(p, panels); break;
  }
  return y;
}

// packed_weight as for packed_linear; ids [...] (int64) -> rows [..., K]: the rows of the float32 weight it holds
at::Tensor packed_rows(const at::Tensor& packed_weight, const at::Tensor& ids, std::string_view format) {
  const FormatSpec spec = format_spec(format);
  TORCH_CHECK(packed_weight.scalar_type() == spec.dtype && packed_weight.dim() == 3 &&
                  packed_weight.size(2) == spec.record_elements && packed_weight.is_contiguous(),
              "packed_rows: the weight is not packed in format ", format);
  TORCH_CHECK(ids.scalar_type() == at::kLong, "packed_rows: int64 ids only");
  const auto rows = ids.contiguous();
  const int64_t K = packed_weight.size(1), count = rows.numel(), columns = packed_weight.size(0) * kPanel;
  const int64_t* id = rows.data_ptr<int64_t>();
  for (int64_t i = 0; i < count; ++i)
    TORCH_CHECK(id[i] >= 0 && id[i] < columns, "packed_rows: id ", id[i], " out of range");
  auto sizes = ids.sizes().vec();
  sizes.push_back(K);
  auto out = at::empty(sizes, packed_weight.options().dtype(at::kFloat));
  const auto* w = static_cast<const uint8_t*>(packed_weight.const_data_ptr());
  switch (spec.format) {
    case Format::kFp32: gather_rows<Format::kFp32>(w, id, count, K, out.data_ptr<float>()); break;
    case Format::kBf16: gather_rows<Format::kBf16>(w, id, count, K, out.data_ptr<float>()); break;
    case Format::kBfp8: gather_rows<Format::kBfp8>(w, id, count, K, out.data_ptr<float>()); break;
    case Format::kBfp4: gather_rows<Format::kBfp4>(w, id, count, K, out.data_ptr<float>()); break;
  }
  return out;
}

namespace {
const bool registered_rows = ingot::register_once(
    "ingot::packed_rows",
    [](torch::Library& library) {
      library.def("packed_rows(Tensor packed_weight, Tensor ids, str format) -> Tensor");
    },
    [](torch::Library& library) { library.impl("packed_rows", &packed_rows); });

const bool registered = ingot::register_once(
    "ingot::packed_linear",
    [](torch::Library& library) {
      library.def(
          "packed_linear(Tensor input, Tensor packed_weight, int out_features, Tensor? bias, str format=\"fp32\") "
          "-> Tensor");
    },
    [](torch::Library& library) { library.impl("packed_linear", &packed_linear); });
}  // namespace
