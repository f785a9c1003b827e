# Writes report_assets.cc: the page template, style and script of report/web as C++ string
# constants, so that dtmctl and the coordinator carry them (a report must open with no network and
# no install folder). Run by report/CMakeLists.txt: cmake -DSOURCE_DIR=... -DOUT=... -P this file.
set(content "// Generated from report/web by report/embed_assets.cmake: edit those files, not this one.\n")
string(APPEND content "#include \"report/report_assets.h\"\n\nnamespace dtm::report {\n")
foreach(pair "kPageTemplate;report.html" "kStyle;report.css" "kScript;report.js")
  list(GET pair 0 name)
  list(GET pair 1 file)
  file(READ "${SOURCE_DIR}/web/${file}" text)
  string(FIND "${text}" ")dtm_asset\"" clash)
  if(NOT clash EQUAL -1)
    message(FATAL_ERROR "web/${file} contains the raw-string delimiter )dtm_asset\"")
  endif()
  string(APPEND content "const char ${name}[] = R\"dtm_asset(${text})dtm_asset\";\n")
endforeach()
string(APPEND content "}  // namespace dtm::report\n")
file(WRITE "${OUT}.tmp" "${content}")
file(RENAME "${OUT}.tmp" "${OUT}")
