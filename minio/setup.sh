#!/bin/sh
# One-shot MinIO bootstrap for the compose stack: creates the `lake` bucket and a `riskstream`
# user whose policy allows reading and writing that bucket only. Runs in the minio/mc image.
set -eu

: "${MINIO_ENDPOINT:=http://minio:9000}"
: "${MINIO_ROOT_USER:?}" "${MINIO_ROOT_PASSWORD:?}"
: "${RISKSTREAM_S3_ACCESS_KEY:?}" "${RISKSTREAM_S3_SECRET_KEY:?}"

until mc alias set local "$MINIO_ENDPOINT" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null 2>&1; do
  echo "waiting for MinIO at $MINIO_ENDPOINT"; sleep 1
done
mc mb --ignore-existing local/lake
mc admin policy create local riskstream-lake /setup/lake-policy.json 2>/dev/null \
  || mc admin policy info local riskstream-lake >/dev/null
mc admin user add local "$RISKSTREAM_S3_ACCESS_KEY" "$RISKSTREAM_S3_SECRET_KEY"
mc admin policy attach local riskstream-lake --user "$RISKSTREAM_S3_ACCESS_KEY" 2>/dev/null || true
echo "MinIO ready: bucket lake, user $RISKSTREAM_S3_ACCESS_KEY"
