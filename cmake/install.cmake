# install(): what `cmake --install build [--prefix DIR]` puts where (GNUInstallDirs, so packagers can move it).
#   bin/paliflow                      the one binary (everything else is linked in statically)
#   share/doc/paliflow/               README.md, PROTOCOL.md (the wire protocol), model/README.md as MODEL.md
#   share/doc/paliflow/examples/      the demo, the sink's Python consumer, a producer config, sample images
#   share/doc/paliflow/deploy/        systemd units, configs, Kubernetes manifests, the Dockerfile, sizing data:
#                                     templates to copy into /etc and /lib/systemd (they name /usr/local/bin/paliflow
#                                     and /etc/paliflow, the default prefix's paths), not installed live
# Tests, benchmarks and fuzz targets are not installed. tests/support/check_install.py checks the result.
include(GNUInstallDirs)
install(TARGETS paliflow RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(FILES README.md proto/PROTOCOL.md DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(FILES model/README.md DESTINATION ${CMAKE_INSTALL_DOCDIR} RENAME MODEL.md)
install(PROGRAMS examples/consume_records.py examples/demo.sh DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples)
install(FILES examples/producer.conf DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples)
install(DIRECTORY examples/images DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples)
install(DIRECTORY deploy/ DESTINATION ${CMAKE_INSTALL_DOCDIR}/deploy USE_SOURCE_PERMISSIONS)   # scripts stay runnable
