# The image of the cohort's Ray pods (head, readers, submitter): Ray plus wsi-tumor, whose
# wsi-infer reads the slides and talks to Triton. numpy stays < 2 like everywhere in the
# project. Build and push it, then name it in deploy/cohort/kustomization.yaml (images):
#   docker build -f deploy/images/cohort.Dockerfile -t REGISTRY/wsi-tumor-cohort:0.1.0 .
#   docker push REGISTRY/wsi-tumor-cohort:0.1.0
# The Ray version must equal rayVersion in deploy/cohort/rayjob.yaml.
FROM rayproject/ray:2.60.0-py311-cpu
RUN pip install --no-cache-dir "ray[default]==2.60.0" "wsi-tumor==0.1.0" "numpy<2" \
    && python -c "import numpy, ray, wsi_tumor; assert int(numpy.__version__.split('.')[0]) < 2" \
    && wsi-infer --help > /dev/null
