// packed_linear's products with bfloat16 inputs (bf16_inputs): see packed_linear_bf16.cpp.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <string_view>

#include "packed_records.h"

namespace ingot::packed {

// Whether this build and this CPU multiply bfloat16 pairs (AVX512-BF16).
bool bf16_products_supported();

// p.y = round_to_bf16(x) W^T (+ bias), with x [p.rows, p.K] float32 and W packed at p.w in ``format`` (not fp32).
void bf16_product(const Problem& p, const at::Tensor& x, int64_t panels, Format format);

}  // namespace ingot::packed
