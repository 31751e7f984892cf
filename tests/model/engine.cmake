# Engine tests: config parsing, the transformer forward pass against
# transformers' logits (tests/reference/models/), random init presets.
if(TARGET retort_model)
  retort_test(model_config_test SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/config_test.cc DEPS retort_model)
  retort_test(model_transformer_test SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/transformer_test.cc DEPS retort_model)
  retort_test(model_init_test SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/init_test.cc DEPS retort_model)
endif()
