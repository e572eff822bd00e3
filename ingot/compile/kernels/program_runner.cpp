// ingot.Program and ingot::run_program: a compiled program called through the dispatcher, so the Python
// interpreter lock is released while it runs. torch's own Python binding of a compiled program holds the
// lock for the whole call, which freezes every other Python thread (a server's event loop included) for the
// hundreds of milliseconds a prefill takes.
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/custom_class.h>
#include <torch/library.h>

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "register_once.h"

namespace {

class Program : public torch::CustomClassHolder {
 public:
  explicit Program(const std::string& package) : loader_(package) {}

  std::vector<std::string> constant_fqns() { return loader_.get_constant_fqns(); }

  // Points the program's weights at the given tensors (no copy); they are kept alive with the program.
  void load_constants(const c10::Dict<std::string, at::Tensor>& constants) {
    std::unordered_map<std::string, at::Tensor> map;
    for (const auto& entry : constants) map.emplace(entry.key(), entry.value());
    loader_.load_constants(map, /*use_inactive=*/false, /*check_full_update=*/true, /*user_managed=*/true);
    constants_ = std::move(map);
  }

  std::vector<at::Tensor> run(const std::vector<at::Tensor>& inputs) { return loader_.run(inputs); }

 private:
  torch::inductor::AOTIModelPackageLoader loader_;
  std::unordered_map<std::string, at::Tensor> constants_;
};

std::vector<at::Tensor> run_program(const c10::intrusive_ptr<Program>& program, const std::vector<at::Tensor>& inputs) {
  return program->run(inputs);
}

const bool registered = ingot::register_once(
    "ingot::run_program",
    [](torch::Library& library) {
      library.class_<Program>("Program")
          .def(torch::init<std::string>())
          .def("constant_fqns", &Program::constant_fqns)
          .def("load_constants", &Program::load_constants);
      library.def("run_program(__torch__.torch.classes.ingot.Program program, Tensor[] inputs) -> Tensor[]");
    },
    [](torch::Library& library) { library.impl("run_program", &run_program); });

}  // namespace
