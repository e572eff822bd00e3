// Records of a packed weight and their decoding, shared by packed_linear's float32 products and its bfloat16
// ones (packed_linear_bf16.cpp).
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
// Decoding is exact: the code converted to float32 and multiplied by a power of two (by two for a tiny block, each
// product a normal float; AVX-512's scalef does it in one instruction, but took 1.1x the multiply's time for one
// SmolLM2 row's bfp8 products on AMD's Zen 4, bench/RESULTS.md). AVX-512 decodes a bfp4 block by lookup instead: each
// lane's nibble moved to the bottom of its lane (a shift) picks its weight (a permute) from the block's 16 possible
// weights, read from a table of them by exponent byte (kBfp4Weights, 16 KiB: every code times 2^(e - bias), exactly).
// Per 16 weights at one row that is a shift, a permute with its table operand in memory and the FMA; scaling the 16
// codes with scalef per block took a fourth vector instruction and made decode steps ~8% slower. A bfp8 block takes a
// sign extension, a conversion, a multiply and the FMA. Scaling the broadcast input by the block's power of two instead
// (fma(code, x * 2^e, acc): the same bits while x * 2^e is exact) saves no instruction at one row (a scalef, or an
// integer add to x's exponent field, per block in place of the codes' scalef) and measured 0.93-0.98x the time of one
// row's products (alternating, on a shared machine), short of paying for the check that x * 2^e is exact; computing the
// scaled inputs of a panel's chunk ahead (its exponents gathered 16 at a time, or read one by one) cost more than the
// scalefs it saves (1.04-1.08x and 1.2-1.4x the time), and decoding the next record ahead of the FMAs was slower too.
// At one row the products run near the machine's memory rate already: ~35 G weights/s on two cores from L2, ~29-41 GB/s
// of bfp8 records from memory.
#pragma once

#include <ATen/cpu/vec/vec.h>

#include <cstdint>
#include <cstring>
#include <limits>
#include <utility>

#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
#include <immintrin.h>
#endif

namespace ingot::packed {

using Vec = at::vec::Vectorized<float>;
constexpr int64_t kPanel = 48;  // output columns per packed panel (the layout, whatever the vector width)
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

#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
// The smallest power of two a block's codes are scaled by in one multiply: below it a single factor would be
// subnormal, so tiny blocks take two factors, each a normal float, and so is a code times the first.
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
#endif

#if defined(CPU_CAPABILITY_AVX512)
// Codes (as floats) times 2^(exponent - bias), exactly: one multiply unless the block is tiny (a predictable branch
// costs less than the multiply, and a multiply less than scalef on AMD's Zen 4).
template <Format F>
[[gnu::always_inline]] inline Vec scaled(__m512 codes, uint8_t exponent) {
  const __m512 first = _mm512_mul_ps(codes, _mm512_set1_ps(kScales<F>.first[exponent]));
  if (__builtin_expect(exponent >= kExponentBias<F> + kMinScale, 1)) return first;
  return _mm512_mul_ps(first, _mm512_set1_ps(kScales<F>.second[exponent]));
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

}  // namespace ingot::packed
