# Sampler tests (model/sampler*.cc -> retort_sampler).
if(TARGET retort_sampler)
  retort_test(model_sampler_test SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/sampler_test.cc DEPS retort_sampler)
endif()
