# Precompiled headers. Parsing <torch/torch.h> costs about 20 s of one core in every translation
# unit that reaches it, and gRPC's and protobuf's headers a few seconds more in every one that talks
# to the wire API; on a 2-core machine that was most of a clean build. Each header set is compiled
# once (dtm_pch_torch, dtm_pch_grpc) and every dtm target reuses it (REUSE_FROM), for exactly the
# sources whose includes reach it: a source that does not include libtorch would only pay for
# loading the 0.5-0.7 GB precompiled header, so it is compiled as before.
#
# GCC uses a precompiled header only when the options that matter match; CMake compiles its users
# with -Winvalid-pch, which dtm's -Werror turns into a build error, so a header that silently stops
# being used shows up in CI rather than as a slow build.
option(DTM_PCH "Precompile libtorch's (and gRPC's and protobuf's) headers once for all targets" ON)

if(DTM_PCH)
  # gRPC's targets compile their users with -pthread, which defines _REENTRANT, a macro libtorch's
  # headers read: GCC refuses a header precompiled without it in such a source ("not used because
  # `_REENTRANT' is defined"). Every target gets -pthread (harmless on Linux), so one precompiled
  # header fits all. Included before the targets exist, as this must be.
  add_compile_options(-pthread)
endif()

# The header sets a dtm source's includes reach, "torch" and/or "grpc", following dtm's own quoted
# includes (from the project root or the including file's folder) and treating the generated
# *.pb.h as gRPC/protobuf. Results are memoized per file; a header met again while it is still being
# scanned (an include cycle) counts as reaching nothing, which can only cost speed, never
# correctness.
function(_dtm_pch_kinds file out_var)
  get_property(known GLOBAL PROPERTY "_dtm_pch_kinds:${file}" SET)
  if(known)
    get_property(kinds GLOBAL PROPERTY "_dtm_pch_kinds:${file}")
    set(${out_var} "${kinds}" PARENT_SCOPE)
    return()
  endif()
  set_property(GLOBAL PROPERTY "_dtm_pch_kinds:${file}" "")
  set(kinds "")
  get_filename_component(dir "${file}" DIRECTORY)
  file(STRINGS "${file}" lines REGEX "^[ \t]*#[ \t]*include[ \t]")
  foreach(line IN LISTS lines)
    if(line MATCHES "<(torch|ATen|c10)/")
      list(APPEND kinds torch)
    elseif(line MATCHES "<(grpcpp|google/protobuf)/" OR line MATCHES "\\.pb\\.h\"")
      list(APPEND kinds grpc)
    elseif(line MATCHES "\"([^\"]+)\"")
      set(included "${CMAKE_MATCH_1}")
      foreach(base "${PROJECT_SOURCE_DIR}" "${dir}")
        if(EXISTS "${base}/${included}")
          _dtm_pch_kinds("${base}/${included}" reached)
          list(APPEND kinds ${reached})
          break()
        endif()
      endforeach()
    endif()
  endforeach()
  list(REMOVE_DUPLICATES kinds)
  set_property(GLOBAL PROPERTY "_dtm_pch_kinds:${file}" "${kinds}")
  set(${out_var} "${kinds}" PARENT_SCOPE)
endfunction()

# Every buildsystem target defined in `dir` and the folders below it.
function(_dtm_targets_below dir out_var)
  get_property(targets DIRECTORY "${dir}" PROPERTY BUILDSYSTEM_TARGETS)
  get_property(subdirs DIRECTORY "${dir}" PROPERTY SUBDIRECTORIES)
  foreach(sub IN LISTS subdirs)
    _dtm_targets_below("${sub}" below)
    list(APPEND targets ${below})
  endforeach()
  set(${out_var} "${targets}" PARENT_SCOPE)
endfunction()

# One object library per header set: it owns the .gch that the other targets reuse.
function(_dtm_pch_host name)
  cmake_parse_arguments(ARG "" "" "HEADERS;LIBS;OPTIONS" ${ARGN})
  set(source "${PROJECT_BINARY_DIR}/${name}.cc")
  if(NOT EXISTS "${source}")
    file(WRITE "${source}" "// The translation unit that builds ${name}'s precompiled header.\n")
  endif()
  add_library(${name} OBJECT "${source}")
  target_link_libraries(${name} PRIVATE ${ARG_LIBS})
  target_compile_options(${name} PRIVATE ${ARG_OPTIONS})
  target_precompile_headers(${name} PRIVATE ${ARG_HEADERS})
endfunction()

# Called once, at the end of the top-level CMakeLists.txt, when every target exists.
function(dtm_precompile_headers)
  if(NOT DTM_PCH)
    return()
  endif()
  _dtm_pch_host(dtm_pch_torch HEADERS <torch/torch.h> LIBS ${TORCH_LIBRARIES} OPTIONS ${TORCH_CXX_FLAGS})
  set(hosts torch)
  if(TARGET gRPC::grpc++)
    _dtm_pch_host(dtm_pch_grpc
      HEADERS <grpcpp/grpcpp.h> <google/protobuf/message.h>
              <google/protobuf/generated_message_reflection.h> <google/protobuf/extension_set.h>
              <google/protobuf/repeated_field.h> <google/protobuf/util/time_util.h>
      LIBS gRPC::grpc++ protobuf::libprotobuf)
    list(APPEND hosts grpc)
  endif()

  _dtm_targets_below("${PROJECT_SOURCE_DIR}" targets)
  foreach(target IN LISTS targets)
    get_target_property(type ${target} TYPE)
    get_target_property(pic ${target} POSITION_INDEPENDENT_CODE)
    # dtm_proto is generated code compiled position-independent (a PCH built without -fPIC is not
    # usable there) and cheap; the hosts are the PCHs themselves.
    if(NOT type MATCHES "^(STATIC_LIBRARY|EXECUTABLE|OBJECT_LIBRARY)$" OR pic
       OR target MATCHES "^dtm_pch_")
      continue()
    endif()
    get_target_property(source_dir ${target} SOURCE_DIR)
    get_target_property(sources ${target} SOURCES)
    set(compiled "")
    foreach(kind IN LISTS hosts)
      set(${kind}_sources "")
    endforeach()
    foreach(source IN LISTS sources)
      if(NOT source MATCHES "\\.(cc|cpp)$")
        continue()
      endif()
      if(NOT IS_ABSOLUTE "${source}")
        set(source "${source_dir}/${source}")
      endif()
      list(APPEND compiled "${source}")
      if(EXISTS "${source}")
        _dtm_pch_kinds("${source}" kinds)
        # A source that reaches both uses libtorch's: the larger saving.
        foreach(kind IN LISTS hosts)
          if(kind IN_LIST kinds)
            list(APPEND ${kind}_sources "${source}")
            break()
          endif()
        endforeach()
      endif()
    endforeach()
    # A target reuses one precompiled header; libtorch's wherever one of its sources reaches it.
    foreach(kind IN LISTS hosts)
      if(${kind}_sources)
        target_precompile_headers(${target} REUSE_FROM dtm_pch_${kind})
        list(REMOVE_ITEM compiled ${${kind}_sources})
        if(compiled)
          set_source_files_properties(${compiled} TARGET_DIRECTORY ${target}
            PROPERTIES SKIP_PRECOMPILE_HEADERS ON)
        endif()
        break()
      endif()
    endforeach()
  endforeach()
endfunction()
