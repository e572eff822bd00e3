// ingot::paged_decode_attention: one query token per sequence attending to its context in the paged
// KV cache, read block by block where it lies. Written as tensor ops, decode attention gathers every
// layer's context into a contiguous copy first and then runs small matrix products over it: at batch
// 32 that moves the keys and values through memory three times. Here one work item is one sequence:
// it reads each of its blocks once, front to back for all KV heads, with an online softmax per block,
// while it prefetches the next block.
// The cache holds float32 or bfloat16 (--kv-cache-dtype): a bfloat16 key or value is widened to float32 in
// registers as it is loaded (exactly: it is a float32's upper half), so a bfloat16 cache halves the bytes read
// and the attention itself stays float32.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/BFloat16.h>
#include <immintrin.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "claimed_items.h"
#include "register_once.h"

namespace {

using Vec = at::vec::Vectorized<float>;
constexpr int64_t kMaxRows = 8;  // query rows one pass over a block serves (a KV head's group, in chunks)
constexpr int64_t kMaxVecs = 16;  // head_dim / Vec::size()
constexpr int64_t kMaxBlockSize = 128;

struct CacheLayout {
  int64_t block_size, block_stride, slot_stride, head_dim;
};

// Vec::size() cache values as float32 vectors: float32 as it is, bfloat16 zero-extended and shifted into a float32's
// upper half (the AVX-512 and AVX2 builds of the library each have their width's path).
inline Vec load_floats(const float* values) { return Vec::loadu(values); }
inline Vec load_floats(const c10::BFloat16* values) {
#if defined(CPU_CAPABILITY_AVX512)
  const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(values));
  return Vec(_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16)));
#elif defined(CPU_CAPABILITY_AVX2)
  const __m128i bits = _mm_loadu_si128(reinterpret_cast<const __m128i*>(values));
  return Vec(_mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16)));
#else
#error "ingot's library is built for CPU_CAPABILITY_AVX512 or CPU_CAPABILITY_AVX2 (see ingot.compile.kernels)"
#endif
}

float reduce_sum(Vec v) { return at::vec::vec_reduce_all<float>([](const Vec& a, const Vec& b) { return a + b; }, v); }
float reduce_max(Vec v) {
  return at::vec::vec_reduce_all<float>([](const Vec& a, const Vec& b) { return at::vec::maximum(a, b); }, v);
}

// Online-softmax state of ROWS query rows that share one KV head. The shapes are template parameters so the
// rows, their accumulators and a key's vectors all stay in registers (2.4x faster than runtime-sized loops). T is the
// cache's element type.
template <typename T, int VECS, int ROWS>
struct Rows {
  Vec q[ROWS][VECS], acc[ROWS][VECS];
  float max[ROWS], sum[ROWS];

  void start(const float* query, int64_t head_dim, float scale) {
    for (int r = 0; r < ROWS; ++r) {
      for (int i = 0; i < VECS; ++i) {
        q[r][i] = Vec::loadu(query + r * head_dim + i * Vec::size()) * Vec(scale);
        acc[r][i] = Vec(0.f);
      }
      max[r] = -INFINITY;
      sum[r] = 0.f;
    }
  }

  // Fold `tokens` keys and values of one block (one KV head's slice of it) into the state.
  void attend(const T* keys, const T* values, int64_t tokens, int64_t slot_stride) {
    alignas(64) float weights[ROWS][kMaxBlockSize];
    for (int64_t slot = 0; slot < tokens; ++slot) {
      Vec k[VECS];
      for (int i = 0; i < VECS; ++i) k[i] = load_floats(keys + slot * slot_stride + i * Vec::size());
      for (int r = 0; r < ROWS; ++r) {
        Vec dot = q[r][0] * k[0];
        for (int i = 1; i < VECS; ++i) dot = at::vec::fmadd(q[r][i], k[i], dot);
        weights[r][slot] = reduce_sum(dot);
      }
    }
    for (int r = 0; r < ROWS; ++r) {
      float* w = weights[r];
      float block_max = -INFINITY;
      for (int64_t t = 0; t < tokens; t += Vec::size())
        block_max = std::max(block_max, reduce_max(Vec::loadu(w + t, std::min<int64_t>(Vec::size(), tokens - t))));
      const float new_max = std::max(max[r], block_max);
      const float rescale = std::exp(max[r] - new_max);
      Vec block_sum(0.f);
      for (int64_t t = 0; t < tokens; t += Vec::size()) {
        const int64_t n = std::min<int64_t>(Vec::size(), tokens - t);
        const Vec e = (Vec::loadu(w + t, n) - Vec(new_max)).exp_u20();
        e.store(w + t, n);
        block_sum += Vec::set(Vec(0.f), e, n);  // lanes past the block's tokens count nothing
      }
      sum[r] = sum[r] * rescale + reduce_sum(block_sum);
      max[r] = new_max;
      for (int i = 0; i < VECS; ++i) acc[r][i] = acc[r][i] * Vec(rescale);
    }
    for (int64_t slot = 0; slot < tokens; ++slot) {
      Vec v[VECS];
      for (int i = 0; i < VECS; ++i) v[i] = load_floats(values + slot * slot_stride + i * Vec::size());
      for (int r = 0; r < ROWS; ++r) {
        const Vec w(weights[r][slot]);
        for (int i = 0; i < VECS; ++i) acc[r][i] = at::vec::fmadd(w, v[i], acc[r][i]);
      }
    }
  }

  void finish(float* out, int64_t head_dim) const {
    for (int r = 0; r < ROWS; ++r)
      for (int i = 0; i < VECS; ++i) (acc[r][i] / Vec(sum[r])).store(out + r * head_dim + i * Vec::size());
  }
};

// One sequence: every block of its context is fetched ahead (the next block while this one computes) and then
// read by each KV head's rows in turn, so its cache lines are used while they are hot. A KV head's query rows
// are taken ROWS at a time (ROWS divides the group): the state of every row does not fit in registers.
template <typename T, int VECS, int ROWS>
void attend_sequence(const float* query, float* out, const T* keys, const T* values, const int64_t* table,
                     int64_t context, int64_t kv_heads, int64_t group, const CacheLayout& layout, float scale) {
  const int64_t D = layout.head_dim, BS = layout.block_size, chunks = group / ROWS;
  std::vector<Rows<T, VECS, ROWS>> states(kv_heads * chunks);
  for (int64_t s = 0; s < kv_heads * chunks; ++s) states[s].start(query + s * ROWS * D, D, scale);
  const int64_t blocks = (context + BS - 1) / BS, block_values = BS * layout.slot_stride;
  for (int64_t block = 0; block < blocks; ++block) {
    if (block + 1 < blocks) {
      const int64_t next = table[block + 1] * layout.block_stride;
      for (int64_t f = 0; f < block_values; f += 64 / sizeof(T)) {  // one cache line at a time
        __builtin_prefetch(keys + next + f);
        __builtin_prefetch(values + next + f);
      }
    }
    const int64_t offset = table[block] * layout.block_stride, tokens = std::min(BS, context - block * BS);
    for (int64_t s = 0; s < kv_heads * chunks; ++s) {
      const int64_t head = s / chunks;
      states[s].attend(keys + offset + head * D, values + offset + head * D, tokens, layout.slot_stride);
    }
  }
  for (int64_t s = 0; s < kv_heads * chunks; ++s) states[s].finish(out + s * ROWS * D, D);
}

template <typename T>
using AttendSequence = void (*)(const float*, float*, const T*, const T*, const int64_t*, int64_t, int64_t, int64_t,
                                const CacheLayout&, float);

template <typename T, int VECS>
AttendSequence<T> pick_rows(int64_t rows) {
  switch (rows) {
    case 1: return attend_sequence<T, VECS, 1>;
    case 2: return attend_sequence<T, VECS, 2>;
    case 3: return attend_sequence<T, VECS, 3>;
    case 4: return attend_sequence<T, VECS, 4>;
    case 5: return attend_sequence<T, VECS, 5>;
    case 6: return attend_sequence<T, VECS, 6>;
    case 7: return attend_sequence<T, VECS, 7>;
    default: return attend_sequence<T, VECS, 8>;
  }
}

// The instantiation for head_dim / Vec::size() vectors and the largest row count up to kMaxRows dividing group.
template <typename T>
AttendSequence<T> pick(int64_t vecs, int64_t group) {
  int64_t rows = kMaxRows;
  while (group % rows) --rows;
  switch (vecs) {
    case 1: return pick_rows<T, 1>(rows);
    case 2: return pick_rows<T, 2>(rows);
    case 4: return pick_rows<T, 4>(rows);
    case 8: return pick_rows<T, 8>(rows);
    default: return pick_rows<T, 16>(rows);
  }
}

// Every sequence of the batch, one work item each, over a cache of element type T.
template <typename T>
void attend_batch(const float* query, float* out, const at::Tensor& kv_cache, int64_t layer, const int64_t* tables,
                  int64_t width, const int64_t* context_lens, int64_t batch, int64_t heads, const CacheLayout& layout,
                  float scale) {
  const int64_t D = layout.head_dim, BS = layout.block_size, kv_heads = kv_cache.size(4);
  const int64_t kv_stride = kv_cache.size(2) * layout.block_stride;
  const T* keys = kv_cache.data_ptr<T>() + layer * 2 * kv_stride;
  const T* values = keys + kv_stride;
  const AttendSequence<T> attend = pick<T>(D / Vec::size(), heads / kv_heads);
  ingot::for_each_claimed(batch, [&](int64_t b, int64_t) {
    const int64_t context = std::min(context_lens[b], width * BS);
    attend(query + b * heads * D, out + b * heads * D, keys, values, tables + b * width, context, kv_heads,
           heads / kv_heads, layout, scale);
  });
}

}  // namespace

// query [B, Hq, D]; kv_cache [layers, 2, blocks, block_size, Hkv, D]; block_tables [B, width];
// context_lens [B] (each at least 1) -> [B, Hq, D]. query float32; kv_cache float32 or bfloat16.
at::Tensor paged_decode_attention(const at::Tensor& query, const at::Tensor& kv_cache, int64_t layer,
                                  const at::Tensor& block_tables, const at::Tensor& context_lens, double scale) {
  TORCH_CHECK(query.dim() == 3 && kv_cache.dim() == 6 && block_tables.dim() == 2 && context_lens.dim() == 1,
              "paged_decode_attention: wrong ranks");
  TORCH_CHECK(query.scalar_type() == at::kFloat, "paged_decode_attention: the query must be float32");
  TORCH_CHECK(kv_cache.scalar_type() == at::kFloat || kv_cache.scalar_type() == at::kBFloat16,
              "paged_decode_attention: the KV cache must be float32 or bfloat16");
  TORCH_CHECK(kv_cache.is_contiguous(), "kv_cache must be contiguous");
  const auto q = query.contiguous();
  const auto tables = block_tables.to(at::kLong).contiguous();
  const auto lens = context_lens.to(at::kLong).contiguous();
  const int64_t batch = q.size(0), heads = q.size(1), D = q.size(2);
  const int64_t BS = kv_cache.size(3), kv_heads = kv_cache.size(4);
  const int64_t vecs = D / Vec::size();
  TORCH_CHECK(heads % kv_heads == 0 && kv_cache.size(5) == D, "paged_decode_attention: head shapes disagree");
  TORCH_CHECK(D % Vec::size() == 0 && (vecs & (vecs - 1)) == 0 && vecs <= kMaxVecs && BS <= kMaxBlockSize,
              "paged_decode_attention: shape beyond the kernel's limits");
  auto out = at::empty_like(q);
  const CacheLayout layout{BS, BS * kv_heads * D, kv_heads * D, D};
  const auto attend = kv_cache.scalar_type() == at::kBFloat16 ? attend_batch<c10::BFloat16> : attend_batch<float>;
  attend(q.data_ptr<float>(), out.data_ptr<float>(), kv_cache, layer, tables.data_ptr<int64_t>(), tables.size(1),
         lens.data_ptr<int64_t>(), batch, heads, layout, static_cast<float>(scale));
  return out;
}

namespace {
const bool registered = ingot::register_once(
    "ingot::paged_decode_attention",
    [](torch::Library& library) {
      library.def(
          "paged_decode_attention(Tensor query, Tensor kv_cache, int layer, Tensor block_tables, "
          "Tensor context_lens, float scale) -> Tensor");
    },
    [](torch::Library& library) { library.impl("paged_decode_attention", &paged_decode_attention); });
}  // namespace
