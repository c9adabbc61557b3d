// TesseraQ calibration lands here (issue: Calibration).
public enum CalibrateModule {}
