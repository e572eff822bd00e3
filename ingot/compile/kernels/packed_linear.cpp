// ingot::packed_linear: y = x W^T (+ bias) for the few rows of a decode step, on a weight packed at compile
// time. oneDNN's GEMM is built for large products; at 1-32 rows a step's products are a stream of weights
// through a handful of rows, and oneDNN leaves much of that stream's bandwidth and the FMA units idle. Here the
// weight is packed as [N/48][K][48] (panels of 48 columns, each one contiguous stream), and one tile keeps up to
// 8 rows x 48 columns of outputs in registers for the whole reduction (AVX-512): per k it loads the panel's 3
// vectors and broadcasts one input value per row, while the row tiles fetch the next panel into L2 between
// them. Threads take three quarters of the panels in even shares and claim the rest one at a time (see
// claimed_items.h). Every row is summed in the same order however many rows the step has, so a sequence's
// logits do not depend on what else is in the batch.
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

struct Problem {
  const float* x;  // [M, K]
  const float* w;  // [P, K, 48]
  const float* bias;  // [N] or null
  float* y;  // [M, N]
  int64_t rows, K, N;
};

// Cache lines of the next panel for one tile to fetch into L2, spread evenly over its reduction.
struct Fetch {
  const char* from;
  int64_t lines;
};

// Rows [row, row + ROWS) x the tile's columns from ``column`` on, of the panel at ``w``, fetching ``fetch``
// with FETCH. A template parameter, so that tiles without it keep their loop as tight as can be (the same
// code with a runtime switch ran 1.5x slower).
template <int ROWS, bool FETCH>
void tile(const Problem& p, int64_t row, const float* w, int64_t column, Fetch fetch) {
  int64_t due = 0;
  Vec acc[ROWS][kTileVecs];
  for (int r = 0; r < ROWS; ++r)
    for (int v = 0; v < kTileVecs; ++v) acc[r][v] = Vec(0.f);
  const float* x = p.x + row * p.K;
  for (int64_t k = 0; k < p.K; ++k) {
    if constexpr (FETCH) {
      for (due += fetch.lines; due >= p.K; due -= p.K, fetch.from += 64) __builtin_prefetch(fetch.from, 0, 2);
    }
    Vec weights[kTileVecs];
    for (int v = 0; v < kTileVecs; ++v) weights[v] = Vec::loadu(w + k * kPanel + v * Vec::size());
    for (int r = 0; r < ROWS; ++r) {
      const Vec value(x[r * p.K + k]);
      for (int v = 0; v < kTileVecs; ++v) acc[r][v] = at::vec::fmadd(value, weights[v], acc[r][v]);
    }
  }
  for (int v = 0; v < kTileVecs; ++v) {
    const int64_t at = column + v * Vec::size();
    const int64_t count = std::min<int64_t>(Vec::size(), p.N - at);
    if (count <= 0) break;
    const Vec bias = p.bias ? Vec::loadu(p.bias + at, count) : Vec(0.f);
    for (int r = 0; r < ROWS; ++r) (acc[r][v] + bias).store(p.y + (row + r) * p.N + at, count);
  }
}

// All rows of one panel: its weights come from memory once, in one stream, then from cache. Its tiles fetch the
// next panel (``next``, null at a thread's last) between them, each an equal share, so that the stream from
// memory overlaps the arithmetic at an even pace (without it the kernel only matched oneDNN at 16-32 rows).
template <int... Remainder>
void panel(const Problem& p, int64_t index, const float* next, std::integer_sequence<int, Remainder...>) {
  constexpr int64_t kLines = kPanel * sizeof(float) / 64;  // cache lines per k of a panel
  const int64_t tiles = kPanelParts * ((p.rows + kTileRows - 1) / kTileRows), lines = p.K * kLines;
  int64_t done = 0;
  const auto share = [&] {  // the next tile's share of the lines
    const int64_t from = done * lines / tiles, to = ++done * lines / tiles;
    return Fetch{reinterpret_cast<const char*>(next) + from * 64, to - from};
  };
  for (int64_t part = 0; part < kPanelParts; ++part) {
    const float* w = p.w + index * p.K * kPanel + part * kTileVecs * Vec::size();
    const int64_t column = index * kPanel + part * kTileVecs * Vec::size();
    if (column >= p.N) return;
    int64_t row = 0;
    for (; row + kTileRows <= p.rows; row += kTileRows) {
      if (next) tile<kTileRows, true>(p, row, w, column, share());
      else tile<kTileRows, false>(p, row, w, column, {});
    }
    const int64_t left = p.rows - row;
    if (next)
      ((left == Remainder + 1 ? tile<Remainder + 1, true>(p, row, w, column, share()) : void()), ...);
    else
      ((left == Remainder + 1 ? tile<Remainder + 1, false>(p, row, w, column, {}) : void()), ...);
  }
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
  ingot::for_each_claimed(packed_weight.size(0), [&](int64_t index, int64_t next) {
    const float* next_panel = next >= 0 ? p.w + next * p.K * kPanel : nullptr;
    panel(p, index, next_panel, std::make_integer_sequence<int, kTileRows - 1>());  // remainders 1 to kTileRows - 1
  });
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
