// packed_linear's products with bfloat16 inputs (bf16_inputs): see packed_linear_bf16.cpp.
#pragma once

#include <cstdint>

#include "packed_records.h"

namespace ingot::packed {

// Whether this build and this CPU multiply bfloat16 pairs (AVX512-BF16).
bool bf16_products_supported();

// p.y = round_to_bf16(p.x) W^T (+ bias), with W packed at p.w in ``format`` (not fp32).
void bf16_product(const Problem& p, int64_t panels, Format format);

}  // namespace ingot::packed
