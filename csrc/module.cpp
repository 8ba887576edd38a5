// The Python module genvar_bench._C. Importing it loads the shared library,
// whose static initialisers register the genvar ops with the dispatcher; the
// ops themselves are reached as torch.ops.genvar.*, so the module is empty.
#include <Python.h>

extern "C" {
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}
