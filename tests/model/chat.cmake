# Chat template / Jinja tests. Fixtures come from transformers' own
# apply_chat_template (tests/reference/chat_templates/make_fixtures.py).
if(TARGET retort_chat)
  retort_test(model_jinja_test SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/jinja_test.cc DEPS retort_chat)
  retort_test(model_chat_template_test SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/chat_template_test.cc DEPS retort_chat)
endif()
