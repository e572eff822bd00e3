// ingot::packed_linear: y = x W^T (+ bias) on a weight packed at compile time, for the few rows of a decode step
// and the many of a prefill step alike, so that every program of an artifact reads one copy of the weights.
// oneDNN's GEMM is built for large products; at 1-32 rows a step's products are a stream of weights through a
// handful of rows, and oneDNN leaves much of that stream's bandwidth and the FMA units idle. Here the weight is
// packed as [N/48][K][48] (panels of 48 columns, each one contiguous stream), and one tile keeps up to 8 rows x
// 48 columns of outputs in registers (AVX-512; 4 x 24 with AVX2): per k it loads the panel's 3 vectors and
// broadcasts one input value per row, while the tiles fetch the next chunk of weights into L2 between them.
//
// The work is cut so that both operands come from cache at any row count: k in blocks of kDepth (a panel's chunk
// then stays in L2 while every tile of the rows goes over it, even for the 8192-wide inputs of a 1B model's down
// projection; tiles accumulate into the output between k blocks), rows in blocks of kBlockRows (a block's inputs
// stay in L2 while a thread goes from one panel to the next). A work item is one row block x one panel over all
// of k; threads take three quarters of the items in even shares and claim the rest one at a time (see
// claimed_items.h). A decode step is one row block: its items are the panels, each streamed from memory once.
// bench/packed_linear.py compares it with oneDNN on its own prepacked weights, at decode and prefill row counts.
//
// Every row is summed in the same order however many rows the step has, so a sequence's logits do not depend on
// what else is in the batch: a tile sums k in order, one fused multiply-add per k, from zero, and a partial sum
// stored to the output between k blocks and loaded again keeps its bits; so neither the blocks nor the tile a
// row falls in change its result.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <utility>

#include "claimed_items.h"
#include "register_once.h"

namespace {

using Vec = at::vec::Vectorized<float>;
constexpr int64_t kPanel = 48;  // output columns per packed panel (the layout, whatever the vector width)
constexpr int kTileVecs = 3;  // vectors of columns per tile: a whole panel with AVX-512, half of one with AVX2
constexpr int kTileRows = Vec::size() == 16 ? 8 : 4;  // 24 accumulators with AVX-512 (of 32 registers), 12 with AVX2
constexpr int64_t kPanelParts = kPanel / (kTileVecs * Vec::size());
constexpr int64_t kLines = kPanel * sizeof(float) / 64;  // cache lines per k of a panel
constexpr int64_t kDepth = 1024;  // k per block: a panel's chunk is 192 KiB, in L2 beside the rows' inputs
constexpr int64_t kBlockRows = 128;  // rows per work item: their inputs over a k block are 512 KiB

struct Problem {
  const float* x;  // [M, K]
  const float* w;  // [P, K, 48]
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

// Rows [row, row + ROWS) of ``in`` x the tile's columns from ``column`` on, over the k range of ``in`` of the
// panel chunk at ``w``, fetching ``fetch`` with FETCH. The first k range starts from zero, the others from what
// the output holds; the last adds the bias. A template parameter, so that tiles without it keep their loop as
// tight as can be (the same code with a runtime switch ran 1.5x slower).
template <int ROWS, bool FETCH>
void tile(const Problem& p, const Inputs& in, int64_t row, const float* w, int64_t column, Fetch fetch) {
  const bool first = in.k == 0, last = in.k + in.depth == p.K;
  int64_t counts[kTileVecs];
  for (int v = 0; v < kTileVecs; ++v) counts[v] = std::clamp<int64_t>(p.N - column - v * Vec::size(), 0, Vec::size());
  float* y = p.y + (in.first_row + row) * p.N + column;
  Vec acc[ROWS][kTileVecs];
  for (int r = 0; r < ROWS; ++r)
    for (int v = 0; v < kTileVecs; ++v)
      acc[r][v] = first || counts[v] == 0 ? Vec(0.f) : Vec::loadu(y + r * p.N + v * Vec::size(), counts[v]);
  const float* x = in.x + row * in.stride;
  int64_t due = 0;
  for (int64_t k = 0; k < in.depth; ++k) {
    if constexpr (FETCH) {
      for (due += fetch.lines; due >= in.depth; due -= in.depth, fetch.from += 64) __builtin_prefetch(fetch.from, 0, 2);
    }
    Vec weights[kTileVecs];
    for (int v = 0; v < kTileVecs; ++v) weights[v] = Vec::loadu(w + k * kPanel + v * Vec::size());
    for (int r = 0; r < ROWS; ++r) {
      const Vec value(x[r * in.stride + k]);
      for (int v = 0; v < kTileVecs; ++v) acc[r][v] = at::vec::fmadd(value, weights[v], acc[r][v]);
    }
  }
  for (int v = 0; v < kTileVecs; ++v) {
    if (counts[v] == 0) break;
    if (last && p.bias) {
      const Vec bias = Vec::loadu(p.bias + column + v * Vec::size(), counts[v]);
      for (int r = 0; r < ROWS; ++r) acc[r][v] = acc[r][v] + bias;
    }
    for (int r = 0; r < ROWS; ++r) acc[r][v].store(y + r * p.N + v * Vec::size(), counts[v]);
  }
}

// All rows of ``in`` over one panel's chunk of its k range: the chunk comes from memory once, then from cache.
// The tiles fetch the next chunk (``next``, null at a thread's last) between them, each an equal share, so that
// the stream from memory overlaps the arithmetic at an even pace (without it the kernel only matched oneDNN at
// 16-32 rows).
template <int... Remainder>
void panel(const Problem& p, const Inputs& in, int64_t index, Fetch next, std::integer_sequence<int, Remainder...>) {
  const int64_t tiles = kPanelParts * ((in.rows + kTileRows - 1) / kTileRows);
  int64_t done = 0;
  const auto share = [&] {  // the next tile's share of the lines
    const int64_t from = done * next.lines / tiles, to = ++done * next.lines / tiles;
    return Fetch{next.from + from * 64, to - from};
  };
  for (int64_t part = 0; part < kPanelParts; ++part) {
    const float* w = p.w + (index * p.K + in.k) * kPanel + part * kTileVecs * Vec::size();
    const int64_t column = index * kPanel + part * kTileVecs * Vec::size();
    if (column >= p.N) return;
    int64_t row = 0;
    for (; row + kTileRows <= in.rows; row += kTileRows) {
      if (next.from) tile<kTileRows, true>(p, in, row, w, column, share());
      else tile<kTileRows, false>(p, in, row, w, column, {});
    }
    const int64_t left = in.rows - row;
    if (next.from)
      ((left == Remainder + 1 ? tile<Remainder + 1, true>(p, in, row, w, column, share()) : void()), ...);
    else
      ((left == Remainder + 1 ? tile<Remainder + 1, false>(p, in, row, w, column, {}) : void()), ...);
  }
}

constexpr auto kRemainders = std::make_integer_sequence<int, kTileRows - 1>();  // 1 to kTileRows - 1 rows

// A panel's chunk over k range [k, k + kDepth), for fetching.
Fetch chunk(const Problem& p, int64_t index, int64_t k) {
  return {reinterpret_cast<const char*>(p.w + (index * p.K + k) * kPanel), std::min(kDepth, p.K - k) * kLines};
}

// Work items of a block of rows x one panel, each over all of k in blocks; a thread's consecutive items take the
// same rows (from L2) to the next panel.
void product(const Problem& p, int64_t panels) {
  const int64_t row_blocks = (p.rows + kBlockRows - 1) / kBlockRows;
  ingot::for_each_claimed(row_blocks * panels, [&](int64_t item, int64_t next_item) {
    const int64_t index = item % panels, first_row = item / panels * kBlockRows;
    const int64_t rows = std::min(kBlockRows, p.rows - first_row);
    for (int64_t k = 0; k < p.K; k += kDepth) {
      const Fetch next = k + kDepth < p.K ? chunk(p, index, k + kDepth)
                         : next_item >= 0 ? chunk(p, next_item % panels, 0)
                                          : Fetch{nullptr, 0};
      const Inputs in{p.x + first_row * p.K + k, p.K, first_row, rows, k, std::min(kDepth, p.K - k)};
      panel(p, in, index, next, kRemainders);
    }
  });
}

}  // namespace

// input [..., K]; packed_weight [ceil(N / 48), K, 48], zero past column N; bias [N] or none -> [..., N]
at::Tensor packed_linear(const at::Tensor& input, const at::Tensor& packed_weight, int64_t out_features,
                         const std::optional<at::Tensor>& bias) {
  TORCH_CHECK(input.scalar_type() == at::kFloat && packed_weight.scalar_type() == at::kFloat, "float32 only");
  TORCH_CHECK(packed_weight.dim() == 3 && packed_weight.size(2) == kPanel && packed_weight.is_contiguous(),
              "packed_linear: the weight is not packed");
  const int64_t K = packed_weight.size(1), N = out_features;
  TORCH_CHECK(input.size(-1) == K && packed_weight.size(0) * kPanel >= N, "packed_linear: shapes disagree");
  const auto x = input.contiguous();
  const auto b = bias.has_value() ? bias->contiguous() : at::Tensor();
  TORCH_CHECK(!b.defined() || (b.numel() == N && b.scalar_type() == at::kFloat), "packed_linear: bad bias");
  auto sizes = input.sizes().vec();
  sizes.back() = N;
  auto y = at::empty(sizes, x.options());
  const Problem p{x.data_ptr<float>(), packed_weight.data_ptr<float>(), b.defined() ? b.data_ptr<float>() : nullptr,
                  y.data_ptr<float>(), x.numel() / K, K, N};
  if (p.rows == 0) return y;
  product(p, packed_weight.size(0));
  return y;
}

namespace {
const bool registered = ingot::register_once(
    "ingot::packed_linear",
    [](torch::Library& library) {
      library.def("packed_linear(Tensor input, Tensor packed_weight, int out_features, Tensor? bias) -> Tensor");
    },
    [](torch::Library& library) { library.impl("packed_linear", &packed_linear); });
}  // namespace
