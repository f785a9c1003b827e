"""The Python stubs that proto/gen_python.sh generates import and talk gRPC.

Generates the stubs into a temporary folder, serves a fake DtmService and the standard health
service from an in-process Python server, and calls SubmitJob and Health/Check through the stubs.
With DTM_HEALTH_ADDR set (host:port of a running dtm-coordinator), it also checks that server's
health, which is how a later end-to-end test will use it.
"""
import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
from concurrent import futures

import grpc

SOURCE_DIR = os.environ.get("DTM_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
PROTO_DIR = os.path.join(SOURCE_DIR, "proto")
STUB_DIR = tempfile.mkdtemp(prefix="dtm-pystubs-")
atexit.register(shutil.rmtree, STUB_DIR, ignore_errors=True)
subprocess.run([os.path.join(PROTO_DIR, "gen_python.sh"), STUB_DIR], check=True)
sys.path.insert(0, STUB_DIR)

from dtm.v1 import dtm_service_pb2, dtm_service_pb2_grpc, job_pb2  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

DEADLINE_S = 5.0


class FakeDtmService(dtm_service_pb2_grpc.DtmServiceServicer):
    def SubmitJob(self, request, context):
        return job_pb2.Job(job_id="job-" + request.client_request_id, state=job_pb2.JOB_STATE_PENDING)


class FakeHealth(health_pb2_grpc.HealthServicer):
    def Check(self, request, context):
        if request.service in ("", "dtm.v1.DtmService"):
            return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)
        context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")


class PythonStubsTest(unittest.TestCase):
    def setUp(self):
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        dtm_service_pb2_grpc.add_DtmServiceServicer_to_server(FakeDtmService(), self.server)
        health_pb2_grpc.add_HealthServicer_to_server(FakeHealth(), self.server)
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")

    def tearDown(self):
        self.channel.close()
        self.server.stop(None)

    def test_submit_job_round_trips(self):
        stub = dtm_service_pb2_grpc.DtmServiceStub(self.channel)
        request = dtm_service_pb2.SubmitJobRequest(spec_yaml=b"kind: evaluate\n", client_request_id="py")
        job = stub.SubmitJob(request, timeout=DEADLINE_S)
        self.assertEqual(job.job_id, "job-py")
        self.assertEqual(job.state, job_pb2.JOB_STATE_PENDING)

    def test_health_check_answers_serving(self):
        stub = health_pb2_grpc.HealthStub(self.channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service="dtm.v1.DtmService"), timeout=DEADLINE_S)
        self.assertEqual(reply.status, health_pb2.HealthCheckResponse.SERVING)

    def test_optional_fields_keep_absent_apart_from_zero(self):
        progress = job_pb2.JobProgress(job_id="j")
        self.assertFalse(progress.HasField("search_level"))
        progress.search_level = 0
        self.assertTrue(job_pb2.JobProgress.FromString(progress.SerializeToString()).HasField("search_level"))

    @unittest.skipUnless(os.environ.get("DTM_HEALTH_ADDR"), "DTM_HEALTH_ADDR names no running server")
    def test_running_server_answers_serving(self):
        with grpc.insecure_channel(os.environ["DTM_HEALTH_ADDR"]) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=DEADLINE_S)
        self.assertEqual(reply.status, health_pb2.HealthCheckResponse.SERVING)


if __name__ == "__main__":
    unittest.main()
