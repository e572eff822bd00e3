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
// The weight's records (float32 or one of Tenstorrent's formats) and their decoding: packed_records.h; products
// with the inputs rounded to bfloat16 (bf16_inputs): packed_linear_bf16.cpp.
//
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
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "claimed_items.h"
#include "packed_linear_bf16.h"
#include "packed_records.h"
#include "register_once.h"

namespace {

using namespace ingot::packed;
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
// bias [N] or none -> [..., N]. bf16_inputs: the input rounded to bfloat16 and multiplied in bfloat16 pairs
// (packed_linear_bf16.cpp).
at::Tensor packed_linear(const at::Tensor& input, const at::Tensor& packed_weight, int64_t out_features,
                         const std::optional<at::Tensor>& bias, std::string_view format, bool bf16_inputs) {
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
  if (bf16_inputs) {
    TORCH_CHECK(spec.format != Format::kFp32, "packed_linear: bf16_inputs needs a weight format bfloat16 holds "
                "exactly (bf16, bfp8, bfp4), not fp32");
    TORCH_CHECK(bf16_products_supported(), "packed_linear: bf16_inputs needs ingot's AVX-512 build on a CPU with "
                "AVX512-BF16 (avx512_bf16)");
    bf16_product(p, panels, spec.format);
    return y;
  }
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
          "packed_linear(Tensor input, Tensor packed_weight, int out_features, Tensor? bias, str format=\"fp32\", "
          "bool bf16_inputs=False) -> Tensor");
    },
    [](torch::Library& library) { library.impl("packed_linear", &packed_linear); });
}  // namespace
