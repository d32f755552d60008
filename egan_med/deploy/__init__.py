"""What a run deploys: the detector the report recommends, at the epochs and threshold its label budget chose.

``assemble`` builds a run's detectors as saved scorers (``models.scorers``) at the epochs a protocol chose;
``finalize`` scores, reports, and writes the deployed scorer and ``operating_point.json`` that ``predict``, the
export and the MONAI bundle all serve.
"""
