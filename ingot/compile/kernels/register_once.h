// Registration of ingot's ops, by hand rather than with TORCH_LIBRARY_FRAGMENT: every artifact carries its own
// copy of the library, and a process that loads two artifacts (or compiles one and then serves it) must not
// register an op twice.
#pragma once

#include <torch/library.h>

#include <functional>
#include <memory>
#include <vector>

namespace ingot {

// Unless a copy of the library loaded earlier did it: defines op ``name`` with ``define`` and gives it its CPU
// kernel with ``implement``. Returns whether it registered.
inline bool register_once(const char* name, const std::function<void(torch::Library&)>& define,
                          const std::function<void(torch::Library&)>& implement) {
  static std::vector<std::unique_ptr<torch::Library>> libraries;  // registrations last as long as they are kept
  if (c10::Dispatcher::singleton().findSchema({name, ""}).has_value()) return false;
  define(*libraries.emplace_back(
      std::make_unique<torch::Library>(torch::Library::FRAGMENT, "ingot", std::nullopt, __FILE__, __LINE__)));
  implement(*libraries.emplace_back(
      std::make_unique<torch::Library>(torch::Library::IMPL, "ingot", c10::DispatchKey::CPU, __FILE__, __LINE__)));
  return true;
}

}  // namespace ingot
