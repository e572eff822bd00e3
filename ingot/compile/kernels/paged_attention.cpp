// ingot::paged_decode_attention: one query token per sequence attending to its context in the paged
// KV cache, read block by block where it lies. Written as tensor ops, decode attention gathers every
// layer's context into a contiguous copy first and then runs small matrix products over it: at batch
// 32 that moves the keys and values through memory three times. Here one work item is one segment of a
// sequence's context (256 tokens), for all its KV heads: it reads each of the segment's blocks once, front to
// back, with an online softmax per block (a block's scores summed 16 keys at a time, transpose_sums), while it
// prefetches the next a line or two at each key and value it folds in (NextBlockFetch); a long context's segments
// are combined after. A step with fewer segments than twice the threads (a single sequence's) takes one KV head an
// item, so that every thread has work: a single sequence's attention used to run on one thread while the others
// waited (SmolLM2's shape on Zen 3, 30 layers: 0.78x the time at 200 tokens of context, 0.55x at 1,000).
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
constexpr int64_t kSegmentTokens = 256;  // context per work item (in whole blocks)

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

// Lane i of the result: the sum of vectors[i]'s lanes, for Vec::size() vectors at once. Summed as a transpose
// (pairs of vectors interleaved and added, then pairs of those), about three instructions a vector where reducing
// each on its own took eight: a key's score per query row was the decode attention's largest part.
#if defined(CPU_CAPABILITY_AVX512)
inline Vec transpose_sums(const float (*vectors)[16]) {
  __m512 pairs[8], quads[4], halves[2];
  for (int i = 0; i < 8; ++i) {  // each 128-bit lane: two partial sums of vector 2i, two of 2i + 1
    const __m512 a = _mm512_load_ps(vectors[2 * i]), b = _mm512_load_ps(vectors[2 * i + 1]);
    pairs[i] = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
  }
  for (int i = 0; i < 4; ++i) {  // each 128-bit lane: its part of the sums of vectors 4i to 4i + 3
    const __m512 a = pairs[2 * i], b = pairs[2 * i + 1];
    quads[i] = _mm512_add_ps(_mm512_shuffle_ps(a, b, 0x44), _mm512_shuffle_ps(a, b, 0xEE));
  }
  for (int i = 0; i < 2; ++i) {  // 128-bit lanes: halves of the sums of vectors 8i to 8i + 3, then 8i + 4 to 8i + 7
    const __m512 a = quads[2 * i], b = quads[2 * i + 1];
    halves[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x88), _mm512_shuffle_f32x4(a, b, 0xDD));
  }
  return Vec(_mm512_add_ps(_mm512_shuffle_f32x4(halves[0], halves[1], 0x88),
                           _mm512_shuffle_f32x4(halves[0], halves[1], 0xDD)));
}
#else  // the same steps, 8 vectors of 8 lanes
inline Vec transpose_sums(const float (*vectors)[8]) {
  __m256 pairs[4], quads[2];
  for (int i = 0; i < 4; ++i) {
    const __m256 a = _mm256_load_ps(vectors[2 * i]), b = _mm256_load_ps(vectors[2 * i + 1]);
    pairs[i] = _mm256_add_ps(_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b));
  }
  for (int i = 0; i < 2; ++i) {
    const __m256 a = pairs[2 * i], b = pairs[2 * i + 1];
    quads[i] = _mm256_add_ps(_mm256_shuffle_ps(a, b, 0x44), _mm256_shuffle_ps(a, b, 0xEE));
  }
  return Vec(_mm256_add_ps(_mm256_permute2f128_ps(quads[0], quads[1], 0x20),
                           _mm256_permute2f128_ps(quads[0], quads[1], 0x31)));
}
#endif

float reduce_sum(Vec v) { return at::vec::vec_reduce_all<float>([](const Vec& a, const Vec& b) { return a + b; }, v); }
float reduce_max(Vec v) {
  return at::vec::vec_reduce_all<float>([](const Vec& a, const Vec& b) { return at::vec::maximum(a, b); }, v);
}

// The next block's cache lines (the item's heads' slice of each slot, keys and values), prefetched a few at a time
// at each key and value the current block folds in, so that the loads of the next block overlap the arithmetic on
// this one. Issued all at once at the start of a block (192 lines for SmolLM2), they overlapped nothing (more than
// the core's queue of outstanding misses holds, the likely reason): 32 sequences x 192 tokens of bf16 cache in
// random blocks took the time of the arithmetic alone (all in cache) plus that of reading it; spread, about the
// arithmetic's time (Zen 4, bench/RESULTS.md).
struct NextBlockFetch {
  const char* keys = nullptr;
  const char* values = nullptr;
  int64_t slot_stride = 0, slot_bytes = 0;  // bytes between slots; bytes of the heads' slice of one slot
  int64_t slots = 0, slot = 0, byte = 0;  // the block's slots; the next line's slot and offset in it
  int64_t per_step = 0;  // key-and-value line pairs each step

  NextBlockFetch() = default;  // nothing to fetch: the segment's last block
  // `steps`: how often the current block's states will call step() (once per key and once per value each).
  NextBlockFetch(const char* keys, const char* values, int64_t slot_stride, int64_t slot_bytes, int64_t slots,
                 int64_t steps)
      : keys(keys), values(values), slot_stride(slot_stride), slot_bytes(slot_bytes), slots(slots) {
    const int64_t pairs = slots * ((slot_bytes + 63) / 64);
    per_step = (pairs + steps - 1) / std::max<int64_t>(steps, 1);
  }

  void step() {
    for (int64_t i = 0; i < per_step && slot < slots; ++i) {
      _mm_prefetch(keys + slot * slot_stride + byte, _MM_HINT_T0);
      _mm_prefetch(values + slot * slot_stride + byte, _MM_HINT_T0);
      byte += 64;
      if (byte >= slot_bytes) {
        byte = 0;
        ++slot;
      }
    }
  }
};

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

  // Fold `tokens` keys and values of one block (one KV head's slice of it) into the state, stepping `fetch`.
  void attend(const T* keys, const T* values, int64_t tokens, int64_t slot_stride, NextBlockFetch& fetch) {
    constexpr int64_t kLanes = Vec::size();
    alignas(64) float weights[ROWS][kMaxBlockSize];
    for (int64_t first = 0; first < tokens; first += kLanes) {  // the scores of kLanes keys at a time
      alignas(64) float dots[ROWS][kLanes][kLanes];  // per row and key, the dot product's lanes, to be summed
      const int64_t count = std::min(kLanes, tokens - first);
      for (int64_t n = 0; n < count; ++n) {
        const int64_t slot = first + n;
        fetch.step();
        Vec k[VECS];
        for (int i = 0; i < VECS; ++i) k[i] = load_floats(keys + slot * slot_stride + i * Vec::size());
        for (int r = 0; r < ROWS; ++r) {
          Vec dot = q[r][0] * k[0];
          for (int i = 1; i < VECS; ++i) dot = at::vec::fmadd(q[r][i], k[i], dot);
          dot.store(dots[r][n]);
        }
      }
      for (int r = 0; r < ROWS; ++r)  // past the block's tokens: zeros, whose scores are never read
        for (int64_t n = count; n < kLanes; ++n) Vec(0.f).store(dots[r][n]);
      for (int r = 0; r < ROWS; ++r) transpose_sums(dots[r]).store(weights[r] + first);
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
      fetch.step();
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

  // The state of each row as it stands: its accumulator, then its max and sum (head_dim + 2 floats a row).
  void save(float* partial, int64_t head_dim) const {
    for (int r = 0; r < ROWS; ++r) {
      float* row = partial + r * (head_dim + 2);
      for (int i = 0; i < VECS; ++i) acc[r][i].store(row + i * Vec::size());
      row[head_dim] = max[r];
      row[head_dim + 1] = sum[r];
    }
  }
};

// A query row's output from the states its context's segments saved, in segment order (the same order whatever
// else is in the batch): each rescaled to the largest max, as the online softmax rescales between blocks.
void combine(const float* partials, int64_t segments, int64_t row_stride, int64_t head_dim, float* out) {
  float max = -INFINITY;
  for (int64_t s = 0; s < segments; ++s) max = std::max(max, partials[s * row_stride + head_dim]);
  float sum = 0.f;
  std::fill(out, out + head_dim, 0.f);
  for (int64_t s = 0; s < segments; ++s) {
    const float* state = partials + s * row_stride;
    const float rescale = std::exp(state[head_dim] - max);
    sum += state[head_dim + 1] * rescale;
    for (int64_t d = 0; d < head_dim; ++d) out[d] += state[d] * rescale;
  }
  for (int64_t d = 0; d < head_dim; ++d) out[d] /= sum;
}

// KV heads [first_head, end_head) of one sequence over one segment of its context: each block is read by each of
// the heads' query rows in turn, ROWS at a time (ROWS divides the group: the state of every row does not fit in
// registers), while the heads' slice of the next block is fetched. ``query`` and ``out`` point at the sequence's
// first head. A context of one segment is finished into ``out``; a longer one leaves each row's state in
// ``partial`` (the segment's rows, laid out as the query's, head_dim + 2 floats each) for combine().
template <typename T, int VECS, int ROWS>
void attend_segment(const float* query, float* out, float* partial, const T* keys, const T* values,
                    const int64_t* table, int64_t first_block, int64_t end_block, int64_t context, int64_t first_head,
                    int64_t end_head, int64_t group, const CacheLayout& layout, float scale) {
  const int64_t D = layout.head_dim, BS = layout.block_size, chunks = group / ROWS;
  const int64_t first_row = first_head * group, states_count = (end_head - first_head) * chunks;
  std::vector<Rows<T, VECS, ROWS>> states(states_count);
  for (int64_t s = 0; s < states_count; ++s) states[s].start(query + (first_row + s * ROWS) * D, D, scale);
  const int64_t slot_bytes = (end_head - first_head) * D * sizeof(T);
  const auto slice = [&](const T* cache, int64_t block) {
    return reinterpret_cast<const char*>(cache + table[block] * layout.block_stride + first_head * D);
  };
  for (int64_t block = first_block; block < end_block; ++block) {
    const int64_t offset = table[block] * layout.block_stride, tokens = std::min(BS, context - block * BS);
    NextBlockFetch fetch;
    if (block + 1 < end_block)
      fetch = NextBlockFetch(slice(keys, block + 1), slice(values, block + 1), layout.slot_stride * sizeof(T),
                             slot_bytes, std::min(BS, context - (block + 1) * BS), 2 * tokens * states_count);
    for (int64_t s = 0; s < states_count; ++s) {
      const int64_t head = first_head + s / chunks;
      states[s].attend(keys + offset + head * D, values + offset + head * D, tokens, layout.slot_stride, fetch);
    }
  }
  for (int64_t s = 0; s < states_count; ++s) {
    const int64_t row = first_row + s * ROWS;
    if (partial) states[s].save(partial + row * (D + 2), D);
    else states[s].finish(out + row * D, D);
  }
}

template <typename T>
using AttendSegment = void (*)(const float*, float*, float*, const T*, const T*, const int64_t*, int64_t, int64_t,
                               int64_t, int64_t, int64_t, int64_t, const CacheLayout&, float);

template <typename T, int VECS>
AttendSegment<T> pick_rows(int64_t rows) {
  switch (rows) {
    case 1: return attend_segment<T, VECS, 1>;
    case 2: return attend_segment<T, VECS, 2>;
    case 3: return attend_segment<T, VECS, 3>;
    case 4: return attend_segment<T, VECS, 4>;
    case 5: return attend_segment<T, VECS, 5>;
    case 6: return attend_segment<T, VECS, 6>;
    case 7: return attend_segment<T, VECS, 7>;
    default: return attend_segment<T, VECS, 8>;
  }
}

// The instantiation for head_dim / Vec::size() vectors and the largest row count up to kMaxRows dividing group.
template <typename T>
AttendSegment<T> pick(int64_t vecs, int64_t group) {
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

// One work item: KV heads [first_head, end_head) of a sequence over one segment of its context.
struct Item {
  int64_t sequence, segment, first_head, end_head;
};

// Every sequence of the batch over a cache of element type T. A work item is one segment (kSegmentTokens) of a
// sequence's context, for all its KV heads, or for one when several threads share fewer segments than twice their
// number (a single sequence's step; on one thread, items of one head ran 1.08x slower). How a context is cut into
// segments depends on its own length only, and which heads an item takes changes no arithmetic, so each
// sequence's output is the same whatever else is in the batch.
template <typename T>
void attend_batch(const float* query, float* out, const at::Tensor& kv_cache, int64_t layer, const int64_t* tables,
                  int64_t width, const int64_t* context_lens, int64_t batch, int64_t heads, const CacheLayout& layout,
                  float scale) {
  const int64_t D = layout.head_dim, BS = layout.block_size, kv_heads = kv_cache.size(4), group = heads / kv_heads;
  const int64_t kv_stride = kv_cache.size(2) * layout.block_stride;
  const int64_t segment_blocks = std::max<int64_t>(1, kSegmentTokens / BS);
  const T* keys = kv_cache.data_ptr<T>() + layer * 2 * kv_stride;
  const T* values = keys + kv_stride;
  const auto context = [&](int64_t b) { return std::min(context_lens[b], width * BS); };
  const auto blocks = [&](int64_t b) { return (context(b) + BS - 1) / BS; };
  const auto segments = [&](int64_t b) { return (blocks(b) + segment_blocks - 1) / segment_blocks; };
  // Where each sequence's partial states start (-1: one segment, none), [segment][row][head_dim + 2] from there.
  std::vector<int64_t> partial_start(batch, -1);
  int64_t partial_floats = 0, total_segments = 0;
  for (int64_t b = 0; b < batch; ++b) {
    total_segments += segments(b);
    if (segments(b) > 1) {
      partial_start[b] = partial_floats;
      partial_floats += segments(b) * heads * (D + 2);
    }
  }
  const int64_t threads = at::get_num_threads();
  const int64_t heads_per_item = threads > 1 && total_segments < 2 * threads ? 1 : kv_heads;
  std::vector<Item> items;
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t segment = 0; segment < segments(b); ++segment)
      for (int64_t head = 0; head < kv_heads; head += heads_per_item)
        items.push_back({b, segment, head, head + heads_per_item});
  std::vector<float> partials(partial_floats);
  const AttendSegment<T> attend = pick<T>(D / Vec::size(), group);
  ingot::for_each_claimed(static_cast<int64_t>(items.size()), [&](int64_t i, int64_t) {
    const Item& item = items[i];
    const int64_t b = item.sequence, first_block = item.segment * segment_blocks;
    const int64_t end_block = std::min(first_block + segment_blocks, blocks(b));
    float* partial = partial_start[b] < 0 ? nullptr
                                          : partials.data() + partial_start[b] + item.segment * heads * (D + 2);
    attend(query + b * heads * D, out + b * heads * D, partial, keys, values, tables + b * width, first_block,
           end_block, context(b), item.first_head, item.end_head, group, layout, scale);
  });
  if (partials.empty()) return;
  at::parallel_for(0, batch * heads, 1, [&](int64_t first, int64_t last) {
    for (int64_t row = first; row < last; ++row) {
      const int64_t b = row / heads;
      if (partial_start[b] < 0) continue;
      combine(partials.data() + partial_start[b] + row % heads * (D + 2), segments(b), heads * (D + 2), D,
              out + row * D);
    }
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
